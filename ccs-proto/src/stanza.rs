//! Typed XMPP stanzas: what [`crate::xml::StreamReader`] decodes and what the encoders in
//! [`crate::xml::write`] produce.
//!
//! Elements are matched on (namespace, local name) only, never on the prefix, so
//! `<str:features xmlns:str="http://etherx.jabber.org/streams">` and `<stream:features>` are
//! the same [`Stanza::Features`], and `<data:gcm xmlns:data="google:mobile:data">` fills
//! [`Message::gcm`] exactly like `<gcm xmlns="google:mobile:data">`.

use bytes::Bytes;

/// Namespace names used on a CCS stream.
pub mod ns {
    /// The stream namespace (`stream:` prefix by convention).
    pub const STREAMS: &str = "http://etherx.jabber.org/streams";
    /// The default namespace of a client stream.
    pub const CLIENT: &str = "jabber:client";
    /// SASL negotiation.
    pub const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
    /// Resource binding.
    pub const BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
    /// Session establishment (RFC 3921, optional in practice).
    pub const SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
    /// XEP-0199 ping.
    pub const PING: &str = "urn:xmpp:ping";
    /// Stanza error conditions.
    pub const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
    /// Stream error conditions.
    pub const STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
    /// The CCS payload element `<gcm>`.
    pub const GCM: &str = "google:mobile:data";
    /// The `xml:` prefix, bound by definition.
    pub const XML: &str = "http://www.w3.org/XML/1998/namespace";
}

/// The opening `<stream:stream ...>` tag of one stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamHeader {
    /// The prefix the header's element used (`stream` by convention), if any.
    pub prefix: Option<String>,
    /// Attributes other than namespace declarations, in document order, values unescaped.
    pub attributes: Vec<(String, String)>,
    /// Namespace declarations: `(None, uri)` for `xmlns=`, `(Some(prefix), uri)` for
    /// `xmlns:prefix=`.
    pub namespaces: Vec<(Option<String>, String)>,
}

impl StreamHeader {
    /// The value of an attribute (by its qualified name as written, e.g. `xml:lang`).
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `id` attribute (set by the server).
    pub fn id(&self) -> Option<&str> {
        self.attribute("id")
    }

    /// The `from` attribute.
    pub fn from(&self) -> Option<&str> {
        self.attribute("from")
    }

    /// The `to` attribute.
    pub fn to(&self) -> Option<&str> {
        self.attribute("to")
    }

    /// The `version` attribute (`1.0` on an XMPP 1.0 stream).
    pub fn version(&self) -> Option<&str> {
        self.attribute("version")
    }

    /// The default namespace (`jabber:client` on a client stream).
    pub fn default_namespace(&self) -> Option<&str> {
        self.namespaces
            .iter()
            .find(|(p, _)| p.is_none())
            .map(|(_, u)| u.as_str())
    }
}

/// One decoded top-level element of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stanza {
    /// `<stream:features>`.
    Features(Features),
    /// `<auth>`: the client's SASL request (seen by the server role).
    Auth(Auth),
    /// `<success/>`: SASL succeeded; both sides restart the stream.
    SaslSuccess,
    /// `<failure>`: SASL failed.
    SaslFailure(SaslFailure),
    /// `<iq>`.
    Iq(Iq),
    /// `<message>`: every CCS payload travels in one.
    Message(Message),
    /// Any other element (presence, an unknown extension): kept as raw bytes, never dropped.
    Other(Other),
}

/// Stream features offered by the server.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Features {
    /// SASL mechanisms, in the server's order (`X-OAUTH2`, `X-GOOGLE-TOKEN`, `PLAIN` on CCS).
    pub mechanisms: Vec<String>,
    /// Resource binding is offered.
    pub bind: bool,
    /// Session establishment is offered.
    pub session: bool,
    /// Other features as `(namespace, local name)`.
    pub other: Vec<(String, String)>,
}

impl Features {
    /// Whether SASL `PLAIN` is offered (CCS's only mechanism for app servers).
    pub fn offers_plain(&self) -> bool {
        self.mechanisms.iter().any(|m| m == "PLAIN")
    }
}

/// A SASL `<auth>` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// The `mechanism` attribute.
    pub mechanism: String,
    /// The base64 text, as sent (may be empty or `=`).
    pub payload: String,
}

/// A SASL `<failure>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslFailure {
    /// The condition element's name (`not-authorized`, `incorrect-encoding`, ...), or empty if
    /// the server gave none.
    pub condition: String,
    /// The optional `<text>`.
    pub text: Option<String>,
}

/// The `type` of an `<iq>`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IqType {
    /// `get`.
    Get,
    /// `set`.
    Set,
    /// `result`.
    Result,
    /// `error`.
    Error,
    /// Missing or anything else, kept as written.
    Unknown(String),
}

impl IqType {
    /// The attribute value.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Get => "get",
            Self::Set => "set",
            Self::Result => "result",
            Self::Error => "error",
            Self::Unknown(s) => s,
        }
    }

    /// Parses an attribute value.
    pub fn parse(s: &str) -> Self {
        match s {
            "get" => Self::Get,
            "set" => Self::Set,
            "result" => Self::Result,
            "error" => Self::Error,
            other => Self::Unknown(other.to_owned()),
        }
    }
}

/// An `<iq>` stanza.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iq {
    /// The `id` attribute.
    pub id: Option<String>,
    /// The `type` attribute.
    pub kind: IqType,
    /// The `to` attribute.
    pub to: Option<String>,
    /// The `from` attribute.
    pub from: Option<String>,
    /// The first child element other than `<error>`, typed where known.
    pub payload: IqPayload,
    /// The `<error>` child of a `type="error"` iq.
    pub error: Option<Box<StanzaError>>,
}

/// The payload of an `<iq>`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IqPayload {
    /// No child element (a bare result, for example).
    None,
    /// `<bind>`: a request (with an optional `<resource>`) or a result (with the `<jid>`).
    Bind {
        /// The requested resource.
        resource: Option<String>,
        /// The bound JID.
        jid: Option<String>,
    },
    /// `<session>`.
    Session,
    /// XEP-0199 `<ping>`.
    Ping,
    /// Any other child, as `(namespace, local name)`.
    Other {
        /// Its namespace.
        ns: String,
        /// Its local name.
        name: String,
    },
}

/// The text of a `<gcm>` element: a `str` that shares the bytes it was read from when they
/// needed no unescaping (the shape CCS writes), so reading an ack copies nothing. It keeps
/// that part of the read buffer alive while it lives: to keep the text for long, take a
/// `String` ([`Payload::into_string`]).
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Payload(Bytes);

impl Payload {
    /// `text`, which lies inside `frame`, without copying it.
    pub(crate) fn slice_of(frame: &Bytes, text: &str) -> Self {
        Self(frame.slice_ref(text.as_bytes()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Built only from `str`s, so always UTF-8; checking again (a fast pass over ASCII)
        // keeps this crate free of `unsafe`.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The text as an owned `String` (a copy).
    pub fn into_string(self) -> String {
        self.as_str().to_owned()
    }
}

impl std::ops::Deref for Payload {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Payload {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<String> for Payload {
    fn from(s: String) -> Self {
        Self(Bytes::from(s))
    }
}

impl From<&str> for Payload {
    fn from(s: &str) -> Self {
        Self(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<Payload> for String {
    fn from(p: Payload) -> Self {
        p.into_string()
    }
}

impl PartialEq<str> for Payload {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Payload {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A `<message>` stanza.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// The `id` attribute (absent, empty or an id: CCS used all three).
    pub id: Option<String>,
    /// The `type` attribute (`normal`, `error`, or absent). Never used for CCS dispatch.
    pub kind: Option<String>,
    /// The `to` attribute.
    pub to: Option<String>,
    /// The `from` attribute.
    pub from: Option<String>,
    /// The text of the `<gcm xmlns="google:mobile:data">` child, entities decoded, CDATA and
    /// split text joined, surrounding whitespace trimmed; `None` without such a child.
    pub gcm: Option<Payload>,
    /// The `<error>` child of a stanza error.
    pub error: Option<Box<StanzaError>>,
}

/// A stanza-level `<error>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StanzaError {
    /// The legacy numeric `code` attribute (`400` in CCS's example).
    pub code: Option<String>,
    /// The `type` attribute (`modify`, `cancel`, `wait`, `auth`, `continue`).
    pub kind: Option<String>,
    /// The defined condition element's name (`bad-request`, ...), empty if none was given.
    pub condition: String,
    /// The `<text>`, trimmed.
    pub text: Option<String>,
}

/// A `<stream:error>`: the stream is over (see [`crate::xml::Frame::StreamError`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamError {
    /// The condition element's name (`invalid-xml`, `see-other-host`, ...), empty if none.
    pub condition: String,
    /// The condition element's text, if any (the new host for `see-other-host`).
    pub condition_text: Option<String>,
    /// The `<text>`, trimmed.
    pub text: Option<String>,
}

/// An element this crate does not type, kept whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Other {
    /// Its namespace.
    pub ns: String,
    /// Its local name.
    pub name: String,
    /// The stanza's bytes as received.
    pub raw: Bytes,
}
