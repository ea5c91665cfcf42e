//! [`Nack`], its [`NackCode`], and what to do about it ([`RetryClass`]).

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::id::MessageId;
use super::{Fields, IKey, StrSeed};

/// CCS refused a downstream message.
///
/// `error` is the typed code; `raw_error` the text exactly as received, which for the 2013
/// format is a composite such as `InvalidJson : INVALID_TTL : Invalid value (-1) for …`. When
/// serialized, `raw_error` is written if it parses to `error`, otherwise `error`'s code.
///
/// `message_id` is required (a string); `from`, `error` and `error_description` are read
/// when they are strings, and a value of another type is kept in `extra` (an `error` that is
/// not a string counts as absent: [`NackCode::Unknown`] with an empty string, retried with
/// backoff).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nack {
    /// `from`: the registration token the message was addressed to.
    pub from: Option<String>,
    /// `message_id`: the id of our downstream message.
    pub message_id: MessageId,
    /// `error`, typed ([`NackCode::Unknown`] with an empty string when the field was absent
    /// or not a string).
    pub error: NackCode,
    /// `error` as received (empty when the field was absent or not a string).
    pub raw_error: String,
    /// `error_description`: free text, possibly empty.
    pub error_description: Option<String>,
    /// Every other field, and `from`, `error` or `error_description` when not a string.
    pub extra: Map<String, Value>,
}

impl Nack {
    /// A nack of `message_id` with `error`, with no other field.
    pub fn new(message_id: MessageId, error: NackCode) -> Self {
        Self {
            from: None,
            message_id,
            raw_error: error.as_str().to_owned(),
            error,
            error_description: None,
            extra: Map::new(),
        }
    }
}

/// The `error` of a [`Nack`] (PROTOCOL.md §6.2).
///
/// Unless a code says otherwise, a nacked message is not retried; unknown codes are treated
/// like `INTERNAL_SERVER_ERROR` ([`NackCode::retry_class`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NackCode {
    /// `BAD_REGISTRATION`: the registration token is invalid or expired, or belongs to
    /// another sender id ("mismatched sender"). Do not retry; fix or remove the token.
    BadRegistration,
    /// `DEVICE_UNREGISTERED`: the token is no longer valid (app uninstalled or unregistered,
    /// token refreshed). Remove the token; do not retry.
    DeviceUnregistered,
    /// `INTERNAL_SERVER_ERROR`: the server failed while processing the message. Retry with
    /// exponential backoff; report it if it persists.
    InternalServerError,
    /// `SERVICE_UNAVAILABLE`: CCS cannot process the message now. Retry with exponential
    /// backoff from 1 s.
    ServiceUnavailable,
    /// `BAD_ACK`: an ack we sent was malformed. Fix the ack; the message is not retried.
    BadAck,
    /// `INVALID_JSON` (2014 on; `InvalidJson` in 2013 composite strings): the message is
    /// malformed (missing `to`, a wrong field type, payload too big, a reserved data key, a
    /// bad time to live). Do not retry; fix the message.
    InvalidJson,
    /// `CONNECTION_DRAINING`: the connection is draining. Send the message again at once on
    /// another connection (no backoff).
    ConnectionDraining,
    /// `DEVICE_MESSAGE_RATE_EXCEEDED`: too many messages to one device. Slow down for that
    /// device; not retried by default, reported.
    DeviceMessageRateExceeded,
    /// `TOPICS_MESSAGE_RATE_EXCEEDED` (FCM): too many messages to one topic. Slow down; not
    /// retried by default, reported.
    TopicsMessageRateExceeded,
    /// `QUOTA_EXCEEDED`: the older name of the device rate error. As
    /// [`NackCode::DeviceMessageRateExceeded`].
    QuotaExceeded,
    /// `AUTHENTICATION_FAILED` (2013): the sender account could not be authenticated. A
    /// configuration error; do not retry.
    AuthenticationFailed,
    /// `INVALID_TTL` (2013, later a sub-code of `INVALID_JSON`): a bad `time_to_live`. Fix
    /// the message.
    InvalidTtl,
    /// `JSON_TYPE_ERROR` (2013, later a sub-code of `INVALID_JSON`): a field has the wrong
    /// JSON type. Fix the message.
    JsonTypeError,
    /// `INVALID_APNS_CREDENTIAL` (FCM): the APNs credentials of the project are missing or
    /// expired. Fix the console configuration.
    InvalidApnsCredential,
    /// `JSON_PARSING_ERROR`: the JSON could not be parsed (seen as a sub-code of stanza
    /// errors). Fix the message.
    JsonParsingError,
    /// Any other code, kept as received (the whole `error` string; empty when `error` was
    /// absent or not a string). Treated like `INTERNAL_SERVER_ERROR`: retried with backoff.
    Unknown(String),
}

/// What to do about a nacked message, by its [`NackCode`] (PROTOCOL.md Part 1, "Retry").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryClass {
    /// Retry with exponential backoff: `SERVICE_UNAVAILABLE`, `INTERNAL_SERVER_ERROR` and
    /// unknown codes.
    Backoff,
    /// Send again at once on another connection: `CONNECTION_DRAINING`.
    OtherConnection,
    /// A rate limit (`DEVICE_MESSAGE_RATE_EXCEEDED`, `TOPICS_MESSAGE_RATE_EXCEEDED`,
    /// `QUOTA_EXCEEDED`): not retried by default, reported to the caller.
    RateLimited,
    /// Final: retrying the same message cannot help.
    Final,
}

impl NackCode {
    /// The code as CCS writes it (`BAD_REGISTRATION`, …); for [`NackCode::Unknown`], the
    /// text as received.
    pub fn as_str(&self) -> &str {
        match self {
            Self::BadRegistration => "BAD_REGISTRATION",
            Self::DeviceUnregistered => "DEVICE_UNREGISTERED",
            Self::InternalServerError => "INTERNAL_SERVER_ERROR",
            Self::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            Self::BadAck => "BAD_ACK",
            Self::InvalidJson => "INVALID_JSON",
            Self::ConnectionDraining => "CONNECTION_DRAINING",
            Self::DeviceMessageRateExceeded => "DEVICE_MESSAGE_RATE_EXCEEDED",
            Self::TopicsMessageRateExceeded => "TOPICS_MESSAGE_RATE_EXCEEDED",
            Self::QuotaExceeded => "QUOTA_EXCEEDED",
            Self::AuthenticationFailed => "AUTHENTICATION_FAILED",
            Self::InvalidTtl => "INVALID_TTL",
            Self::JsonTypeError => "JSON_TYPE_ERROR",
            Self::InvalidApnsCredential => "INVALID_APNS_CREDENTIAL",
            Self::JsonParsingError => "JSON_PARSING_ERROR",
            Self::Unknown(s) => s,
        }
    }

    /// The code an `error` string names. Accepts the short codes (`BAD_REGISTRATION`) and
    /// the 2013 composite strings (`InvalidJson : INVALID_TTL : Invalid value …`): the
    /// `:`-separated parts are scanned for a known code, and a composite that starts with
    /// `InvalidJson` but names no known code is [`NackCode::InvalidJson`]. Anything else is
    /// [`NackCode::Unknown`] holding the whole string.
    pub fn parse(error: &str) -> Self {
        if let Some(code) = Self::from_token(error.trim()) {
            return code;
        }
        let mut parts = error.split(':');
        let first = parts.next().map(str::trim);
        if let Some(code) = parts.find_map(|part| Self::from_token(part.trim())) {
            return code;
        }
        if first == Some("InvalidJson") {
            return Self::InvalidJson;
        }
        Self::Unknown(error.to_owned())
    }

    /// What to do about a message nacked with this code.
    pub fn retry_class(&self) -> RetryClass {
        match self {
            Self::ServiceUnavailable | Self::InternalServerError | Self::Unknown(_) => {
                RetryClass::Backoff
            }
            Self::ConnectionDraining => RetryClass::OtherConnection,
            Self::DeviceMessageRateExceeded
            | Self::TopicsMessageRateExceeded
            | Self::QuotaExceeded => RetryClass::RateLimited,
            Self::BadRegistration
            | Self::DeviceUnregistered
            | Self::BadAck
            | Self::InvalidJson
            | Self::AuthenticationFailed
            | Self::InvalidTtl
            | Self::JsonTypeError
            | Self::InvalidApnsCredential
            | Self::JsonParsingError => RetryClass::Final,
        }
    }

    /// Whether the message should be sent again by default: true for
    /// [`RetryClass::Backoff`] and [`RetryClass::OtherConnection`].
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.retry_class(),
            RetryClass::Backoff | RetryClass::OtherConnection
        )
    }

    fn from_token(token: &str) -> Option<Self> {
        Some(match token {
            "BAD_REGISTRATION" => Self::BadRegistration,
            "DEVICE_UNREGISTERED" => Self::DeviceUnregistered,
            "INTERNAL_SERVER_ERROR" => Self::InternalServerError,
            "SERVICE_UNAVAILABLE" => Self::ServiceUnavailable,
            "BAD_ACK" => Self::BadAck,
            "INVALID_JSON" | "InvalidJson" => Self::InvalidJson,
            "CONNECTION_DRAINING" => Self::ConnectionDraining,
            "DEVICE_MESSAGE_RATE_EXCEEDED" => Self::DeviceMessageRateExceeded,
            "TOPICS_MESSAGE_RATE_EXCEEDED" => Self::TopicsMessageRateExceeded,
            "QUOTA_EXCEEDED" => Self::QuotaExceeded,
            "AUTHENTICATION_FAILED" => Self::AuthenticationFailed,
            "INVALID_TTL" => Self::InvalidTtl,
            "JSON_TYPE_ERROR" => Self::JsonTypeError,
            "INVALID_APNS_CREDENTIAL" => Self::InvalidApnsCredential,
            "JSON_PARSING_ERROR" => Self::JsonParsingError,
            _ => return None,
        })
    }
}

impl fmt::Display for NackCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for NackCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for NackCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        StrSeed("error").deserialize(d).map(|s| Self::parse(&s))
    }
}

impl Serialize for Nack {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut f = Fields::new(s.serialize_map(None)?);
        f.entry(IKey::MessageType, "nack")?;
        f.optional(IKey::From, self.from.as_ref())?;
        f.entry(IKey::MessageId, &self.message_id)?;
        // An absent `error` gives way to one kept in `extra` (a value that was not a string).
        let absent = self.raw_error.is_empty() && is_empty_unknown(&self.error);
        if !absent || !self.extra.contains_key(IKey::Error.name()) {
            let error = if NackCode::parse(&self.raw_error) == self.error {
                self.raw_error.as_str()
            } else {
                self.error.as_str()
            };
            f.entry(IKey::Error, error)?;
        }
        f.optional(IKey::ErrorDescription, self.error_description.as_ref())?;
        f.end(&self.extra)
    }
}

/// Whether a nack code is the one an absent `error` decodes to.
fn is_empty_unknown(code: &NackCode) -> bool {
    matches!(code, NackCode::Unknown(s) if s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nack_code_tokens() {
        let all = [
            NackCode::BadRegistration,
            NackCode::DeviceUnregistered,
            NackCode::InternalServerError,
            NackCode::ServiceUnavailable,
            NackCode::BadAck,
            NackCode::InvalidJson,
            NackCode::ConnectionDraining,
            NackCode::DeviceMessageRateExceeded,
            NackCode::TopicsMessageRateExceeded,
            NackCode::QuotaExceeded,
            NackCode::AuthenticationFailed,
            NackCode::InvalidTtl,
            NackCode::JsonTypeError,
            NackCode::InvalidApnsCredential,
            NackCode::JsonParsingError,
        ];
        for code in &all {
            assert_eq!(&NackCode::parse(code.as_str()), code);
            assert_eq!(code.to_string(), code.as_str());
        }
        assert_eq!(
            NackCode::parse(
                "InvalidJson : INVALID_TTL : Invalid value (-1) for \"time_to_live\": must be between 0 and \"2419200\"\n"
            ),
            NackCode::InvalidTtl
        );
        assert_eq!(
            NackCode::parse(
                "InvalidJson : JSON_TYPE_ERROR : Field \"delay_while_idle\" must be a JSON java.lang.Boolean: not-boolean-user-supplied-value\n"
            ),
            NackCode::JsonTypeError
        );
        assert_eq!(
            NackCode::parse("InvalidJson : SOMETHING_NEW : text"),
            NackCode::InvalidJson
        );
        assert_eq!(NackCode::parse("InvalidJson"), NackCode::InvalidJson);
        assert_eq!(NackCode::parse(" BAD_ACK "), NackCode::BadAck);
        assert_eq!(
            NackCode::parse("INVALID_REQUEST"),
            NackCode::Unknown("INVALID_REQUEST".into())
        );
        assert_eq!(
            NackCode::parse("Foo : BAR : baz"),
            NackCode::Unknown("Foo : BAR : baz".into())
        );
        assert_eq!(NackCode::parse(""), NackCode::Unknown(String::new()));
        assert_eq!(NackCode::Unknown("X_Y".into()).as_str(), "X_Y");
    }

    #[test]
    fn retry_classes() {
        use RetryClass::*;
        let cases = [
            (NackCode::ServiceUnavailable, Backoff, true),
            (NackCode::InternalServerError, Backoff, true),
            (NackCode::Unknown("NEW_CODE".into()), Backoff, true),
            (NackCode::ConnectionDraining, OtherConnection, true),
            (NackCode::DeviceMessageRateExceeded, RateLimited, false),
            (NackCode::TopicsMessageRateExceeded, RateLimited, false),
            (NackCode::QuotaExceeded, RateLimited, false),
            (NackCode::BadRegistration, Final, false),
            (NackCode::DeviceUnregistered, Final, false),
            (NackCode::BadAck, Final, false),
            (NackCode::InvalidJson, Final, false),
            (NackCode::AuthenticationFailed, Final, false),
            (NackCode::InvalidTtl, Final, false),
            (NackCode::JsonTypeError, Final, false),
            (NackCode::InvalidApnsCredential, Final, false),
            (NackCode::JsonParsingError, Final, false),
        ];
        for (code, class, retry) in cases {
            assert_eq!(code.retry_class(), class, "{code}");
            assert_eq!(code.is_retryable(), retry, "{code}");
        }
    }

    #[test]
    fn nack_serializes_raw_error_only_when_it_agrees() {
        let mut n = Nack::new(MessageId::new("m").unwrap(), NackCode::InvalidTtl);
        n.raw_error = "InvalidJson : INVALID_TTL : bad".into();
        let v: Value = serde_json::to_value(&n).unwrap();
        assert_eq!(v["error"], "InvalidJson : INVALID_TTL : bad");
        n.error = NackCode::BadAck;
        let v: Value = serde_json::to_value(&n).unwrap();
        assert_eq!(v["error"], "BAD_ACK");
    }
}
