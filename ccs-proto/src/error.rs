//! Errors, split by blame.
//!
//! - [`UsageError`]: the caller did something wrong (a bad argument, a value out of range).
//!   Returned from the call that caused it; nothing else changed.
//! - [`PeerError`]: the other side of the connection broke the protocol (malformed XML, a
//!   stanza over the size limit, JSON that is not what CCS sends). A connection closes on the
//!   XML kind; a bad JSON payload is reported and the stream goes on.

use std::fmt;

/// The caller misused the API. Nothing was changed by the call that returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UsageError {
    /// A message id was empty, too long, or held a character XML cannot carry.
    InvalidMessageId {
        /// What was wrong with it.
        reason: &'static str,
    },
    /// A registration token (or topic, or notification key) was empty or held a character XML
    /// cannot carry.
    InvalidRegistrationId {
        /// What was wrong with it.
        reason: &'static str,
    },
    /// `time_to_live` was outside `0..=2_419_200` seconds (four weeks).
    TimeToLiveOutOfRange {
        /// The value that was given.
        seconds: u64,
    },
    /// A field of a message had the wrong shape (for example `data` that is not an object).
    InvalidField {
        /// The JSON name of the field.
        field: &'static str,
        /// What was wrong with it.
        reason: String,
    },
    /// A configuration value was outside its allowed range.
    InvalidConfig {
        /// The name of the setting.
        field: &'static str,
        /// What was wrong with it.
        reason: String,
    },
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidMessageId { reason } => write!(f, "invalid message_id: {reason}"),
            Self::InvalidRegistrationId { reason } => {
                write!(f, "invalid registration id: {reason}")
            }
            Self::TimeToLiveOutOfRange { seconds } => write!(
                f,
                "time_to_live {seconds} s is out of range: it must be 0..=2419200 (four weeks)"
            ),
            Self::InvalidField { field, reason } => write!(f, "invalid field `{field}`: {reason}"),
            Self::InvalidConfig { field, reason } => {
                write!(f, "invalid configuration `{field}`: {reason}")
            }
        }
    }
}

impl std::error::Error for UsageError {}

/// The peer broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerError {
    /// The XML stream is not what XMPP allows; the stream cannot go on.
    Xml(XmlError),
    /// A JSON payload could not be decoded as a CCS message.
    Json(JsonError),
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Xml(e) => write!(f, "peer sent bad XML: {e}"),
            Self::Json(e) => write!(f, "peer sent bad JSON: {e}"),
        }
    }
}

impl std::error::Error for PeerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Xml(e) => Some(e),
            Self::Json(e) => Some(e),
        }
    }
}

impl From<XmlError> for PeerError {
    fn from(e: XmlError) -> Self {
        Self::Xml(e)
    }
}

impl From<JsonError> for PeerError {
    fn from(e: JsonError) -> Self {
        Self::Json(e)
    }
}

/// A fatal problem in the XML stream, with the byte offset (from the start of the stream,
/// counting bytes of earlier streams on the same connection) where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlError {
    /// What was wrong.
    pub kind: XmlErrorKind,
    /// Byte offset in the connection's input at or near which it was found.
    pub offset: u64,
}

impl fmt::Display for XmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte {})", self.kind, self.offset)
    }
}

impl std::error::Error for XmlError {}

/// The kinds of [`XmlError`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum XmlErrorKind {
    /// A stanza grew past `max_stanza_bytes` before it was closed.
    StanzaTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The stream header grew past its limit before it was closed.
    HeaderTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// Elements were nested deeper than `max_depth`.
    TooDeep {
        /// The configured limit.
        limit: usize,
    },
    /// A document type declaration (`<!DOCTYPE`), which XMPP forbids.
    Dtd,
    /// A comment (`<!--`), which XMPP forbids.
    Comment,
    /// A processing instruction (`<?`) other than the XML declaration before the header.
    ProcessingInstruction,
    /// An entity reference other than `&lt; &gt; &amp; &quot; &apos;` or a character reference.
    UndefinedEntity {
        /// The reference as written, up to a bounded length.
        name: String,
    },
    /// A character reference to a character XML does not allow.
    InvalidCharRef {
        /// The reference as written.
        name: String,
    },
    /// Bytes that are not UTF-8.
    InvalidUtf8,
    /// The first element is not `<stream:stream>` in `http://etherx.jabber.org/streams`.
    NotAStreamHeader {
        /// The element name that came instead.
        found: String,
    },
    /// Non-whitespace character data between stanzas.
    TextOutsideStanza,
    /// Data after the stream's closing tag.
    DataAfterEnd,
    /// Anything else that is not well-formed XML (a bad tag, a mismatched end tag, ...).
    Malformed {
        /// What the parser saw.
        detail: String,
    },
}

impl fmt::Display for XmlErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::StanzaTooLarge { limit } => {
                write!(
                    f,
                    "stanza exceeds the limit of {limit} bytes before it closed"
                )
            }
            Self::HeaderTooLarge { limit } => {
                write!(f, "stream header exceeds the limit of {limit} bytes")
            }
            Self::TooDeep { limit } => write!(f, "elements nested deeper than {limit}"),
            Self::Dtd => f.write_str("document type declaration (forbidden in XMPP)"),
            Self::Comment => f.write_str("XML comment (forbidden in XMPP)"),
            Self::ProcessingInstruction => {
                f.write_str("processing instruction (forbidden in XMPP)")
            }
            Self::UndefinedEntity { name } => {
                write!(
                    f,
                    "undefined entity reference `&{name}` (only the five predefined are allowed)"
                )
            }
            Self::InvalidCharRef { name } => write!(f, "invalid character reference `&{name};`"),
            Self::InvalidUtf8 => f.write_str("invalid UTF-8"),
            Self::NotAStreamHeader { found } => {
                write!(f, "expected a <stream:stream> header, found `{found}`")
            }
            Self::TextOutsideStanza => f.write_str("character data between stanzas"),
            Self::DataAfterEnd => f.write_str("data after the end of the stream"),
            Self::Malformed { detail } => write!(f, "malformed XML: {detail}"),
        }
    }
}

/// A JSON payload that is not a CCS message: invalid JSON, a wrong type, a missing field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    /// What serde_json (or the CCS schema check) said, with line and column.
    pub detail: String,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for JsonError {}

impl From<serde_json::Error> for JsonError {
    fn from(e: serde_json::Error) -> Self {
        Self {
            detail: e.to_string(),
        }
    }
}
