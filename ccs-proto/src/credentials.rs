//! The app server's identity: a sender id and a server key.
//!
//! The key is a [`ServerKey`], whose `Debug` and `Display` never show the value, so it can sit
//! in a config struct that is logged without leaking.

use std::fmt;

use crate::error::UsageError;

/// The domain of the CCS identity, whatever host is dialled (PROTOCOL.md §1.1, §2.4).
pub const DEFAULT_DOMAIN: &str = "gcm.googleapis.com";

/// A GCM/FCM sender id (the project number), e.g. `123456789012`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SenderId(String);

impl SenderId {
    /// Checks and wraps a sender id: non-empty, no `@`, `/`, whitespace, NUL or other control
    /// characters (they would change the SASL identity).
    pub fn new(id: impl Into<String>) -> Result<Self, UsageError> {
        let id = id.into();
        if id.is_empty() {
            return Err(UsageError::InvalidConfig {
                field: "sender_id",
                reason: "must not be empty".into(),
            });
        }
        if id
            .chars()
            .any(|c| c == '@' || c == '/' || c.is_whitespace() || c.is_control())
        {
            return Err(UsageError::InvalidConfig {
                field: "sender_id",
                reason: "must not contain '@', '/', whitespace or control characters".into(),
            });
        }
        Ok(Self(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SenderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SenderId({:?})", self.0)
    }
}

impl fmt::Display for SenderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The server key (GCM "API key", FCM "server key"): the SASL PLAIN password.
///
/// `Debug` and `Display` print `ServerKey(<redacted>)` and `<redacted>`; the value is reached
/// only through [`ServerKey::expose`], so every place that uses it is easy to find.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerKey(String);

impl ServerKey {
    /// Wraps a key. It must be non-empty and hold no NUL byte (NUL separates the PLAIN
    /// fields) and no line break (a key read from a file keeps none: trim it first).
    pub fn new(key: impl Into<String>) -> Result<Self, UsageError> {
        let key = key.into();
        if key.is_empty() {
            return Err(UsageError::InvalidConfig {
                field: "server_key",
                reason: "must not be empty".into(),
            });
        }
        if key.contains(['\0', '\n', '\r']) {
            return Err(UsageError::InvalidConfig {
                field: "server_key",
                reason: "must not contain NUL or line breaks".into(),
            });
        }
        Ok(Self(key))
    }

    /// The secret value. Use it only to authenticate.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerKey(<redacted>)")
    }
}

impl fmt::Display for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_never_prints() {
        let k = ServerKey::new("AIzaSySECRET").unwrap();
        assert!(!format!("{k:?}").contains("SECRET"));
        assert!(!format!("{k}").contains("SECRET"));
        assert!(!format!("{:#?}", Some(&k)).contains("SECRET"));
        assert_eq!(k.expose(), "AIzaSySECRET");
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(ServerKey::new("").is_err());
        assert!(ServerKey::new("a\0b").is_err());
        assert!(ServerKey::new("abc\n").is_err());
        assert!(SenderId::new("").is_err());
        assert!(SenderId::new("123@gcm.googleapis.com").is_err());
        assert!(SenderId::new("12 3").is_err());
        assert_eq!(SenderId::new("1234").unwrap().as_str(), "1234");
    }
}
