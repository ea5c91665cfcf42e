//! Typed CCS JSON: the payload of every `<gcm xmlns="google:mobile:data">` element.
//!
//! What the app server sends:
//! - [`Downstream`], built with [`Downstream::builder`] (every CCS field, typed so that an
//!   invalid value cannot be built: [`TimeToLive`] is `0..=2_419_200`, booleans are booleans,
//!   `data` is a JSON object);
//! - [`AppAck`], the ack for an upstream message or a receipt ([`Incoming::ack_for`]).
//!
//! What CCS sends, decoded by [`Incoming::from_json`] and dispatched on the JSON `message_type`
//! only (absent = upstream): [`Upstream`], [`Ack`], [`Nack`] (with a typed [`NackCode`]),
//! [`Receipt`], [`Control`], and [`Incoming::Unknown`] for any other `message_type`, kept whole.
//!
//! The server role decodes what an app server sends with [`ClientMessage::from_json`], and
//! every type here also serializes, so that `Incoming::from_json(&serde_json::to_string(&x)?)`
//! gives `x` back.
//!
//! Unknown fields are never dropped: each message keeps them in an `extra` map and writes them
//! back out.
//!
//! # Leniency (what CCS sends)
//!
//! A message that must be acked is never refused for a detail: refusing it would leave it
//! un-acked, and CCS would deliver it again and again while the application never sees it.
//! So [`Incoming::from_json`] is strict only about what it cannot do without:
//!
//! - `message_type`, when present and not null, must be a string;
//! - `message_id` must be a string (kept as received) on everything but control and unknown
//!   messages, `from` a string on upstream messages and receipts, `control_type` a string on
//!   control messages.
//!
//! Every other field the crate knows is optional, and a value that does not have its
//! documented type is not an error: the typed field is left empty and the value is kept as
//! received in the message's `extra` map, under its own name (for a receipt's `data` entries:
//! in [`Receipt::data`], which is kept whole). Null counts as absent. In detail:
//!
//! - strings (`category`, `registration_id`, `error`, `error_description`, and `from` where it
//!   is optional) and objects (`data`): anything else goes to `extra`; an absent `error` is
//!   [`NackCode::Unknown`] with an empty string;
//! - upstream `time_to_live` (seconds): a non-negative JSON integer, and also a string of
//!   ASCII digits (`"86400"`) or a number with an integral value (`86400.0`, `8.64e4`), read
//!   as that integer; anything else (`"1 day"`, `-1`, `1.5`, a string with a sign or spaces)
//!   goes to `extra`;
//! - receipts: `data.message_status` that is absent or not a string gives
//!   [`ReceiptStatus::Other`] with an empty string; `data.original_message_id` and
//!   `data.device_registration_id` must be strings and `data.message_sent_timestamp` a string
//!   of digits or an integer, or the typed field is `None`.
//!
//! Should the message still not decode (a known field given twice), and the same text is a
//! JSON object that decodes as an upstream message or a receipt once each name keeps its last
//! value, that decoding is returned, so that the message is delivered and acked. Anything else
//! that does not decode is a [`JsonError`](crate::error::JsonError); without a usable `from`
//! and `message_id` there is nothing to ack anyway.
//!
//! Serializing writes such `extra` entries back in place of the empty typed field, so that a
//! decoded message re-encodes to the same object (`"86400"` comes back as `86400`).
//!
//! [`ClientMessage::from_json`] (the server role) stays strict: a wrong type there is the
//! app server's bug, and CCS answers it with a nack.
//!
//! ```
//! use ccs_proto::message::{Downstream, Incoming, NackCode, RetryClass};
//!
//! let msg = Downstream::builder("REGISTRATION_ID", "m-1")?
//!     .data(serde_json::json!({"hello": "world"}))?
//!     .time_to_live(600)?
//!     .delivery_receipt_requested(true)
//!     .build();
//! assert_eq!(
//!     serde_json::to_string(&msg)?,
//!     r#"{"to":"REGISTRATION_ID","message_id":"m-1","time_to_live":600,"delivery_receipt_requested":true,"data":{"hello":"world"}}"#
//! );
//!
//! let nack = Incoming::from_json(
//!     r#"{"message_type":"nack","message_id":"m-1","from":"REGISTRATION_ID","error":"SERVICE_UNAVAILABLE"}"#,
//! )?;
//! let Incoming::Nack(nack) = nack else { unreachable!() };
//! assert_eq!(nack.error, NackCode::ServiceUnavailable);
//! assert_eq!(nack.error.retry_class(), RetryClass::Backoff);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod client_message;
mod downstream;
mod id;
mod incoming;
mod incoming_ref;
#[cfg(test)]
mod incoming_ref_tests;
mod nack;
mod notification;
mod receipt;

pub use client_message::{AppAck, ClientMessage};
pub use downstream::{Downstream, DownstreamBuilder, Priority, TimeToLive};
pub use id::{MessageId, RegistrationId};
pub use incoming::{Ack, Control, ControlType, Incoming, Upstream};
pub use incoming_ref::{AckRef, IncomingRef, NackRef};
pub use nack::{Nack, NackCode, RetryClass};
pub use notification::Notification;
pub use receipt::{Receipt, ReceiptStatus};

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

// Shared by the files of this module: the field-name tables and their key reader, the string
// reader, and the writer of incoming messages' fields.

/// Declares the known field names of one JSON object as a fieldless enum.
///
/// `name` and `lookup` are `#[inline]`: every key of every message goes through them, and the
/// readers that call them are in other files of this module, so possibly in other codegen
/// units (without it, decoding acks was about 5% slower after the split).
macro_rules! field_names {
    ($vis:vis $name:ident, path prefix $prefix:literal { $($variant:ident = $json:literal,)* }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name {
            $($variant,)*
        }

        impl $name {
            // Every name in declaration order (not every list needs it outside tests).
            #[allow(dead_code)]
            $vis const ALL: &'static [$name] = &[$($name::$variant,)*];

            #[inline]
            $vis fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $json,)*
                }
            }

            #[inline]
            $vis fn lookup(s: &str) -> Option<Self> {
                match s {
                    $($json => Some($name::$variant),)*
                    _ => None,
                }
            }

            /// The name with its parent object's, for error messages (`notification.title`).
            #[allow(dead_code)]
            $vis fn path(self) -> &'static str {
                match self {
                    $($name::$variant => concat!($prefix, $json),)*
                }
            }
        }

        impl $crate::message::FieldName for $name {
            #[inline]
            fn lookup(s: &str) -> Option<Self> {
                $name::lookup(s)
            }
        }
    };
}

use field_names;

/// The known names of one object, for [`Key`].
trait FieldName: Sized {
    fn lookup(s: &str) -> Option<Self>;
}

field_names!(IKey, path prefix "" {
    MessageType = "message_type",
    From = "from",
    MessageId = "message_id",
    Category = "category",
    Data = "data",
    TimeToLive = "time_to_live",
    RegistrationId = "registration_id",
    Error = "error",
    ErrorDescription = "error_description",
    ControlType = "control_type",
});

/// An object key: one of the known names (matched without allocating) or any other string.
enum Key<K> {
    Known(K),
    Other(String),
}

impl<'de, K: FieldName> Deserialize<'de> for Key<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor<K>(PhantomData<K>);

        impl<K: FieldName> Visitor<'_> for KeyVisitor<K> {
            type Value = Key<K>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<K>, E> {
                Ok(match K::lookup(v) {
                    Some(k) => Key::Known(k),
                    None => Key::Other(v.to_owned()),
                })
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<K>, E> {
                Ok(match K::lookup(&v) {
                    Some(k) => Key::Known(k),
                    None => Key::Other(v),
                })
            }
        }

        d.deserialize_identifier(KeyVisitor(PhantomData))
    }
}

fn put<T, E: de::Error>(slot: &mut Option<T>, name: &'static str, value: T) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(name));
    }
    *slot = Some(value);
    Ok(())
}

/// A string field; the error names the field.
struct StrSeed(&'static str);

impl<'de> DeserializeSeed<'de> for StrSeed {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for StrSeed {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` as a string", self.0)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
}

impl StrSeed {
    /// The same field, wrapped in a newtype.
    fn map<T>(self, wrap: fn(String) -> T) -> MapSeed<T> {
        MapSeed(self, wrap)
    }
}

/// A string field, wrapped in a newtype as it is read.
struct MapSeed<T>(StrSeed, fn(String) -> T);

impl<'de, T> DeserializeSeed<'de> for MapSeed<T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        self.0.deserialize(d).map(self.1)
    }
}

fn collect_map<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Map<String, Value>, A::Error> {
    let mut out = Map::new();
    while let Some((k, v)) = map.next_entry::<String, Value>()? {
        out.insert(k, v);
    }
    Ok(out)
}

/// Writes an incoming message: its typed fields, then its `extra` entries except
/// `message_type` and those a typed field has written. So an `extra` entry named after a
/// typed field that is absent (or was left empty because the value had another type) is
/// written as it is, and a decoded message re-encodes to the object it came from.
struct Fields<M> {
    map: M,
    // One bit per `IKey` (ten of them), set when that field was written.
    written: u16,
}

impl<M: SerializeMap> Fields<M> {
    fn new(map: M) -> Self {
        Self { map, written: 0 }
    }

    fn entry<V: Serialize + ?Sized>(&mut self, key: IKey, value: &V) -> Result<(), M::Error> {
        self.written |= 1 << key as u16;
        self.map.serialize_entry(key.name(), value)
    }

    fn optional<V: Serialize>(&mut self, key: IKey, value: Option<&V>) -> Result<(), M::Error> {
        match value {
            Some(v) => self.entry(key, v),
            None => Ok(()),
        }
    }

    fn end(mut self, extra: &Map<String, Value>) -> Result<M::Ok, M::Error> {
        for (k, v) in extra {
            let skip = match IKey::lookup(k) {
                Some(IKey::MessageType) => true,
                Some(key) => self.written & (1 << key as u16) != 0,
                None => false,
            };
            if !skip {
                self.map.serialize_entry(k, v)?;
            }
        }
        self.map.end()
    }
}

/// A string of ASCII digits as a `u64` (no sign, no spaces, not empty, within range).
fn digits_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A short description of a JSON value for error messages (never its whole content).
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(_) => "a string".to_owned(),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}
