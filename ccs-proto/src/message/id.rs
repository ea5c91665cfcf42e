//! The ids of CCS messages: [`MessageId`] and [`RegistrationId`], checked when created here and
//! kept as received when decoded.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use serde::de::{DeserializeSeed, Deserializer};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use super::StrSeed;
use crate::error::UsageError;

macro_rules! string_newtype {
    ($name:ident, $what:literal) => {
        impl $name {
            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id as an owned `String`.
            pub fn into_string(self) -> String {
                self.0.into_owned_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        // Hash and Eq are those of the inner `String`, so `Borrow<str>` is consistent and maps
        // keyed by this type can be searched with a `&str`.
        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                *self.0 == *other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                *self.0 == **other
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.into_owned_string()
            }
        }

        impl TryFrom<String> for $name {
            type Error = UsageError;
            fn try_from(s: String) -> Result<Self, UsageError> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = UsageError;
            fn try_from(s: &str) -> Result<Self, UsageError> {
                Self::new(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        /// Permissive: any JSON string is accepted, because ids that come from the peer are
        /// kept exactly as received.
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                StrSeed($what).deserialize(d).map(|s| Self(s.into()))
            }
        }
    };
}

/// The `message_id` of a CCS message.
///
/// Ids you create go through [`MessageId::new`], which refuses an id that is empty, longer than
/// [`MessageId::MAX_LEN`] (1024) bytes of UTF-8, or that holds a character XML 1.0 cannot carry
/// (a control character other than tab, line feed and carriage return, or U+FFFE / U+FFFF):
/// the id is also written as the `id` attribute of the `<message>` stanza. Ids decoded from
/// the peer (with serde) are kept as received, whatever they hold.
///
/// `Hash` and `Eq` are those of the string, and the type is `Borrow<str>`, so a
/// `HashMap<MessageId, _>` can be searched with a `&str`.
///
/// The string is shared (`Arc<str>`): a clone costs no allocation, which is what the client's
/// tables (queue, in flight, timers) do with every message's id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub(super) Arc<str>);

impl MessageId {
    /// The longest id [`MessageId::new`] accepts, in bytes of UTF-8. CCS documents no limit;
    /// this one keeps a stanza small and is far above any id seen in practice.
    pub const MAX_LEN: usize = 1024;

    /// Checks and wraps an id chosen by the caller.
    ///
    /// Errors with [`UsageError::InvalidMessageId`] when the id is empty, longer than
    /// [`MessageId::MAX_LEN`] bytes, or holds a character XML 1.0 cannot carry.
    pub fn new(id: impl Into<String>) -> Result<Self, UsageError> {
        let id = id.into();
        if id.is_empty() {
            return Err(UsageError::InvalidMessageId { reason: "empty" });
        }
        if id.len() > Self::MAX_LEN {
            return Err(UsageError::InvalidMessageId {
                reason: "longer than 1024 bytes",
            });
        }
        if let Some(reason) = xml_problem(&id) {
            return Err(UsageError::InvalidMessageId { reason });
        }
        Ok(Self(id.into()))
    }
}

string_newtype!(MessageId, "message_id");

/// Where a downstream message goes (its `to`): a registration token, a topic
/// (`/topics/name`), or a device-group notification key.
///
/// [`RegistrationId::new`] refuses an empty value and characters XML 1.0 cannot carry; it does
/// not judge the format (the server answers a bad one with a `BAD_REGISTRATION` nack). Values
/// decoded with serde are kept as received.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegistrationId(pub(super) String);

impl RegistrationId {
    /// Checks and wraps a registration token, topic or notification key.
    ///
    /// Errors with [`UsageError::InvalidRegistrationId`] when it is empty or holds a character
    /// XML 1.0 cannot carry.
    pub fn new(id: impl Into<String>) -> Result<Self, UsageError> {
        let id = id.into();
        if id.is_empty() {
            return Err(UsageError::InvalidRegistrationId { reason: "empty" });
        }
        if let Some(reason) = xml_problem(&id) {
            return Err(UsageError::InvalidRegistrationId { reason });
        }
        Ok(Self(id))
    }
}

string_newtype!(RegistrationId, "to");

/// The string of an id, moved out when it is owned, copied when it is shared.
trait IntoOwnedString {
    fn into_owned_string(self) -> String;
}

impl IntoOwnedString for String {
    fn into_owned_string(self) -> String {
        self
    }
}

impl IntoOwnedString for Arc<str> {
    fn into_owned_string(self) -> String {
        String::from(&*self)
    }
}

/// Why `s` cannot be carried in XML 1.0 (as an attribute value or text), if it cannot.
fn xml_problem(s: &str) -> Option<&'static str> {
    // Fast path: no byte below 0x20 (control characters) and no 0xEF, the lead byte of
    // U+F000..=U+FFFF, the range that holds U+FFFE and U+FFFF.
    if s.bytes().all(|b| b >= 0x20 && b != 0xEF) {
        return None;
    }
    s.chars().find_map(|c| match c {
        '\t' | '\n' | '\r' => None,
        '\0'..='\u{1f}' => Some("holds a control character XML 1.0 cannot carry"),
        '\u{fffe}' | '\u{ffff}' => Some("holds U+FFFE or U+FFFF, which XML 1.0 cannot carry"),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_id_validation() {
        assert!(MessageId::new("m-1").is_ok());
        assert!(MessageId::new("tab\tnl\ncr\r").is_ok());
        assert!(MessageId::new("émoji 🎉 <&>\"'").is_ok());
        assert!(MessageId::new("\u{fffd}\u{10ffff}\u{e000}\u{d7ff}").is_ok());
        for bad in ["", "a\0b", "\u{1}", "x\u{1f}", "\u{fffe}", "a\u{ffff}"] {
            assert!(
                matches!(
                    MessageId::new(bad),
                    Err(UsageError::InvalidMessageId { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(MessageId::new("a".repeat(1024)).is_ok());
        assert_eq!(
            MessageId::new("a".repeat(1025)),
            Err(UsageError::InvalidMessageId {
                reason: "longer than 1024 bytes"
            })
        );
        // 1024 bytes of multi-byte characters is the limit, not 1024 characters.
        assert!(MessageId::new("é".repeat(512)).is_ok());
        assert!(MessageId::new("é".repeat(513)).is_err());
        assert!(MessageId::try_from("ok").is_ok());
        assert!(MessageId::try_from(String::new()).is_err());
    }

    #[test]
    fn registration_id_validation() {
        assert!(RegistrationId::new("/topics/news").is_ok());
        assert!(matches!(
            RegistrationId::new(""),
            Err(UsageError::InvalidRegistrationId { .. })
        ));
        assert!(RegistrationId::new("a\u{7}").is_err());
        // No length limit of its own.
        assert!(RegistrationId::new("x".repeat(5000)).is_ok());
    }

    #[test]
    fn ids_borrow_as_str() {
        let mut map = std::collections::HashMap::new();
        map.insert(MessageId::new("m-1").unwrap(), 1);
        assert_eq!(map.get("m-1"), Some(&1));
        let id = MessageId::new("m-1").unwrap();
        assert_eq!(id, "m-1");
        assert_eq!(id.to_string(), "m-1");
        assert_eq!(String::from(id), "m-1");
    }
}
