//! SASL PLAIN (RFC 4616) as CCS used it (PROTOCOL.md §2.4).
//!
//! - Client role: [`plain_payload`] builds the base64 text of `authzid NUL authcid NUL
//!   password`; [`crate::xml::write::auth_plain`] wraps it in `<auth>`.
//! - Server role: [`decode_plain`] reads a payload back into [`PlainCredentials`] (tolerating
//!   the line-wrapped base64 some clients sent), [`identity_matches`] accepts every identity
//!   form the real CCS accepted, and [`key_matches`] compares the key without an early exit.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The base64 text of a PLAIN message: standard alphabet, `=` padding, one line, no
/// whitespace, of `authzid NUL authcid NUL password`.
///
/// CCS's recommended form (PROTOCOL.md §2.4) is an empty `authzid`, `authcid` =
/// `SENDER@gcm.googleapis.com` and the server key as `password`:
///
/// ```
/// let p = ccs_proto::sasl::plain_payload("", "123456789012@gcm.googleapis.com", "AIza...key...");
/// assert_eq!(p, "ADEyMzQ1Njc4OTAxMkBnY20uZ29vZ2xlYXBpcy5jb20AQUl6YS4uLmtleS4uLg==");
/// ```
///
/// The arguments are taken as they are: a NUL inside one of them would change the message
/// (callers pass a checked [`crate::credentials::SenderId`] and
/// [`crate::credentials::ServerKey`], which hold none).
pub fn plain_payload(authzid: &str, authcid: &str, password: &str) -> String {
    let mut raw = Vec::with_capacity(authzid.len() + authcid.len() + password.len() + 2);
    raw.extend_from_slice(authzid.as_bytes());
    raw.push(0);
    raw.extend_from_slice(authcid.as_bytes());
    raw.push(0);
    raw.extend_from_slice(password.as_bytes());
    STANDARD.encode(&raw)
}

/// The three fields of a decoded PLAIN message.
///
/// `Debug` shows the identities but never the password.
#[derive(Clone)]
pub struct PlainCredentials {
    /// The authorization identity (often empty).
    pub authzid: String,
    /// The authentication identity (`SENDER@gcm.googleapis.com` or a bare `SENDER` on CCS).
    pub authcid: String,
    /// The password (the server key on CCS). Compare it with [`key_matches`].
    pub password: String,
}

impl fmt::Debug for PlainCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlainCredentials")
            .field("authzid", &self.authzid)
            .field("authcid", &self.authcid)
            .field("password", &format_args!("<redacted>"))
            .finish()
    }
}

/// Why a PLAIN payload was refused; [`PlainError::condition`] gives the SASL failure
/// condition to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlainError {
    /// No payload at all, or RFC 6120's `=` (an empty response): PLAIN needs a message.
    /// Condition `malformed-request`.
    Empty,
    /// Not canonical standard base64 with padding (after removing surrounding whitespace
    /// and line breaks). Condition `incorrect-encoding`.
    InvalidBase64,
    /// The decoded message does not have exactly three NUL-separated fields.
    /// Condition `malformed-request`.
    FieldCount {
        /// How many fields it had.
        found: usize,
    },
    /// A field is not UTF-8. Condition `malformed-request`.
    InvalidUtf8,
    /// The authentication identity or the password is empty (RFC 4616 requires both).
    /// Condition `malformed-request`.
    EmptyField {
        /// `"authcid"` or `"password"`.
        field: &'static str,
    },
}

impl PlainError {
    /// The SASL failure condition (an element name in `urn:ietf:params:xml:ns:xmpp-sasl`)
    /// that answers this error: `incorrect-encoding` for bad base64, `malformed-request`
    /// for everything else.
    pub fn condition(&self) -> &'static str {
        match self {
            Self::InvalidBase64 => "incorrect-encoding",
            Self::Empty | Self::FieldCount { .. } | Self::InvalidUtf8 | Self::EmptyField { .. } => {
                "malformed-request"
            }
        }
    }
}

impl fmt::Display for PlainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("empty SASL PLAIN response"),
            Self::InvalidBase64 => f.write_str("SASL PLAIN response is not valid base64"),
            Self::FieldCount { found } => write!(
                f,
                "SASL PLAIN message has {found} NUL-separated fields instead of 3"
            ),
            Self::InvalidUtf8 => f.write_str("SASL PLAIN message is not UTF-8"),
            Self::EmptyField { field } => write!(f, "SASL PLAIN {field} is empty"),
        }
    }
}

impl std::error::Error for PlainError {}

/// Decodes the base64 text of an `<auth mechanism="PLAIN">` (the server role).
///
/// Tolerant where real clients differed: whitespace around the text is ignored, and so are
/// line breaks (CR, LF) inside it (xmpppy, used by Google's Python sample, wrapped the base64
/// every 76 characters). Strict otherwise: other whitespace or characters, missing or wrong
/// padding and non-zero trailing bits are [`PlainError::InvalidBase64`]; the message must
/// have exactly three NUL-separated UTF-8 fields with a non-empty authcid and password.
pub fn decode_plain(payload: &str) -> Result<PlainCredentials, PlainError> {
    let trimmed = payload.trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n'));
    if trimmed.is_empty() || trimmed == "=" {
        return Err(PlainError::Empty);
    }
    let decoded = if memchr::memchr2(b'\r', b'\n', trimmed.as_bytes()).is_some() {
        let joined: Vec<u8> = trimmed
            .bytes()
            .filter(|&b| b != b'\r' && b != b'\n')
            .collect();
        STANDARD.decode(joined)
    } else {
        STANDARD.decode(trimmed)
    }
    .map_err(|_| PlainError::InvalidBase64)?;
    if decoded.is_empty() {
        return Err(PlainError::Empty);
    }

    let mut fields = decoded.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(PlainError::FieldCount {
            found: decoded.iter().filter(|&&b| b == 0).count() + 1,
        });
    };
    let text = |b: &[u8]| {
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| PlainError::InvalidUtf8)
    };
    let creds = PlainCredentials {
        authzid: text(authzid)?,
        authcid: text(authcid)?,
        password: text(password)?,
    };
    if creds.authcid.is_empty() {
        return Err(PlainError::EmptyField { field: "authcid" });
    }
    if creds.password.is_empty() {
        return Err(PlainError::EmptyField { field: "password" });
    }
    Ok(creds)
}

/// Whether the identities in `creds` name `sender_id` in `domain`, in any form the real CCS
/// accepted (PROTOCOL.md §2.4):
///
/// | authzid | authcid |
/// |---|---|
/// | (empty) | `SENDER@domain` |
/// | (empty) | `SENDER` |
/// | `SENDER@domain` | `SENDER` |
/// | `SENDER@domain` | `SENDER@domain` |
/// | `SENDER` | `SENDER` |
///
/// In general: the authcid is `SENDER` or `SENDER@domain`, and the authzid is empty or one of
/// those two. The sender id is compared exactly, the domain ASCII case-insensitively (domain
/// names are). Another sender, another domain (`SENDER@gcm-xmpp.googleapis.com`), a resource
/// (`SENDER@domain/res`) or an empty `sender_id` or `domain` never match. The password is
/// not looked at: check it with [`key_matches`].
pub fn identity_matches(creds: &PlainCredentials, sender_id: &str, domain: &str) -> bool {
    if sender_id.is_empty() || domain.is_empty() {
        return false;
    }
    names_sender(&creds.authcid, sender_id, domain)
        && (creds.authzid.is_empty() || names_sender(&creds.authzid, sender_id, domain))
}

/// Whether `id` is `sender` or `sender@domain`.
fn names_sender(id: &str, sender: &str, domain: &str) -> bool {
    match id.strip_prefix(sender) {
        Some("") => true,
        Some(rest) => rest
            .strip_prefix('@')
            .is_some_and(|d| d.eq_ignore_ascii_case(domain)),
        None => false,
    }
}

/// Whether the key a client gave equals the expected one.
///
/// For inputs of equal length the time taken does not depend on their content (every byte
/// is compared, no early exit); a length mismatch returns `false` at once (the length of a
/// key is not the secret).
pub fn key_matches(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const SENDER: &str = "123456789012";
    const DOMAIN: &str = "gcm.googleapis.com";
    const KEY: &str = "AIza...key...";

    fn creds(authzid: &str, authcid: &str) -> PlainCredentials {
        decode_plain(&plain_payload(authzid, authcid, KEY)).unwrap()
    }

    #[test]
    fn recommended_payload_matches_protocol_md() {
        assert_eq!(
            plain_payload("", "123456789012@gcm.googleapis.com", KEY),
            "ADEyMzQ1Njc4OTAxMkBnY20uZ29vZ2xlYXBpcy5jb20AQUl6YS4uLmtleS4uLg=="
        );
    }

    #[test]
    fn round_trip() {
        let c = creds("z", "123@gcm.googleapis.com");
        assert_eq!(c.authzid, "z");
        assert_eq!(c.authcid, "123@gcm.googleapis.com");
        assert_eq!(c.password, KEY);
    }

    #[test]
    fn every_accepted_identity_form() {
        let full = format!("{SENDER}@{DOMAIN}");
        let forms = [
            ("", full.as_str()),
            ("", SENDER),
            (full.as_str(), SENDER),
            (full.as_str(), full.as_str()),
            (SENDER, SENDER),
            (SENDER, full.as_str()),
            ("", "123456789012@GCM.googleapis.com"),
        ];
        for (authzid, authcid) in forms {
            assert!(
                identity_matches(&creds(authzid, authcid), SENDER, DOMAIN),
                "{authzid:?} / {authcid:?} should match"
            );
        }
    }

    #[test]
    fn rejected_identity_forms() {
        let full = format!("{SENDER}@{DOMAIN}");
        let forms = [
            ("", "999999999999@gcm.googleapis.com"),
            ("", "999999999999"),
            ("", "123456789012@gcm-xmpp.googleapis.com"),
            ("", "123456789012@fcm-xmpp.googleapis.com"),
            ("", "123456789012@gcm.googleapis.com/res"),
            ("", "1234567890123"),
            ("", "12345678901"),
            ("", "123456789012@"),
            ("", "@gcm.googleapis.com"),
            ("other@gcm.googleapis.com", full.as_str()),
            ("123456789012@gcm-xmpp.googleapis.com", SENDER),
            ("999999999999", SENDER),
        ];
        for (authzid, authcid) in forms {
            assert!(
                !identity_matches(&creds(authzid, authcid), SENDER, DOMAIN),
                "{authzid:?} / {authcid:?} should not match"
            );
        }
        let empty = PlainCredentials {
            authzid: String::new(),
            authcid: String::new(),
            password: KEY.into(),
        };
        assert!(!identity_matches(&empty, "", DOMAIN));
        assert!(!identity_matches(&creds("", "@x"), "", "x"));
        assert!(!identity_matches(&creds("", SENDER), SENDER, ""));
    }

    #[test]
    fn line_wrapped_and_padded_with_whitespace() {
        // xmpppy: base64.encodestring, a line break every 76 characters and one at the end.
        let long_key = "AAAAabcdefg:APA91bHXyz0123456789-abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789";
        let authzid = format!("{SENDER}@{DOMAIN}");
        let one_line = plain_payload(&authzid, SENDER, long_key);
        assert!(one_line.len() > 152);
        let wrapped: String = one_line
            .as_bytes()
            .chunks(76)
            .map(|c| format!("{}\n", std::str::from_utf8(c).unwrap()))
            .collect();
        let c = decode_plain(&wrapped).unwrap();
        assert_eq!(c.authzid, authzid);
        assert_eq!(c.authcid, SENDER);
        assert_eq!(c.password, long_key);
        assert!(identity_matches(&c, SENDER, DOMAIN));
        assert!(key_matches(&c.password, long_key));

        let crlf = wrapped.replace('\n', "\r\n");
        assert_eq!(decode_plain(&crlf).unwrap().password, long_key);
        let spaced = format!("  \t\n{one_line} \n");
        assert_eq!(decode_plain(&spaced).unwrap().password, long_key);
    }

    #[test]
    fn garbage_is_rejected_with_the_right_condition() {
        let good = plain_payload("", SENDER, KEY);
        let cases: Vec<(String, PlainError)> = vec![
            (String::new(), PlainError::Empty),
            ("   ".into(), PlainError::Empty),
            ("=".into(), PlainError::Empty),
            (" = ".into(), PlainError::Empty),
            ("not base64!".into(), PlainError::InvalidBase64),
            ("QUJD RA==".into(), PlainError::InvalidBase64),
            ("QUJDRA".into(), PlainError::InvalidBase64),
            ("QUJDRA=".into(), PlainError::InvalidBase64),
            ("QUJDRB==".into(), PlainError::InvalidBase64),
            ("QUJD-A==".into(), PlainError::InvalidBase64),
            ("QUJD\tRA==".into(), PlainError::InvalidBase64),
            (format!("{good}=="), PlainError::InvalidBase64),
            (
                format!("{}\n {}", &good[..8], &good[8..]),
                PlainError::InvalidBase64,
            ),
            ("==".into(), PlainError::InvalidBase64),
            (STANDARD.encode("abc"), PlainError::FieldCount { found: 1 }),
            (STANDARD.encode("a\0b"), PlainError::FieldCount { found: 2 }),
            (
                STANDARD.encode("a\0b\0c\0d"),
                PlainError::FieldCount { found: 4 },
            ),
            (STANDARD.encode("\0"), PlainError::FieldCount { found: 2 }),
            (STANDARD.encode(b"\0a\0\xff"), PlainError::InvalidUtf8),
            (STANDARD.encode(b"\xc3\0a\0b"), PlainError::InvalidUtf8),
            (
                STANDARD.encode("\0\0k"),
                PlainError::EmptyField { field: "authcid" },
            ),
            (
                STANDARD.encode("\0a\0"),
                PlainError::EmptyField { field: "password" },
            ),
            (
                STANDARD.encode("\0\0"),
                PlainError::EmptyField { field: "authcid" },
            ),
        ];
        for (payload, want) in cases {
            let got = decode_plain(&payload).unwrap_err();
            assert_eq!(got, want, "for {payload:?}");
            let condition = match want {
                PlainError::InvalidBase64 => "incorrect-encoding",
                _ => "malformed-request",
            };
            assert_eq!(got.condition(), condition);
            assert!(!got.to_string().is_empty());
        }
    }

    #[test]
    fn password_is_redacted_in_debug() {
        let c = creds("", "123456789012@gcm.googleapis.com");
        for shown in [
            format!("{c:?}"),
            format!("{c:#?}"),
            format!("{:?}", Some(&c)),
        ] {
            assert!(!shown.contains("key"), "{shown}");
            assert!(shown.contains("<redacted>"));
            assert!(shown.contains("123456789012@gcm.googleapis.com"));
        }
    }

    #[test]
    fn keys_compare() {
        assert!(key_matches(KEY, KEY));
        assert!(!key_matches(KEY, "AIza...key..!"));
        assert!(!key_matches(KEY, "AIza...key"));
        assert!(!key_matches("", KEY));
        assert!(key_matches("", ""));
    }
}
