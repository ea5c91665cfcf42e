//! What CCS sends: [`Incoming`] and its variants other than nacks and receipts, with the lenient
//! one-pass reader that decodes them all.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::client_message::AppAck;
use super::id::MessageId;
use super::nack::{Nack, NackCode};
use super::receipt::Receipt;
use super::{Fields, IKey, Key, collect_map, describe, digits_u64, put};
use crate::error::JsonError;

/// A message from CCS to the app server, decoded by [`Incoming::from_json`].
///
/// Dispatch is on the JSON `message_type` only (never on stanza attributes): absent =
/// [`Incoming::Upstream`], `"ack"`, `"nack"`, `"receipt"`, `"control"`, and any other value
/// is [`Incoming::Unknown`], kept whole. Fields a variant does not know go in its `extra`, and
/// so does a known optional field whose value has the wrong type (see the
/// [module documentation](super#leniency-what-ccs-sends)): an upstream message or a receipt
/// with a string `from` and `message_id` always decodes, so that it can be acked.
/// Ack every upstream message and every receipt ([`Incoming::ack_for`]); never ack the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A message from a device (no `message_type`).
    Upstream(Upstream),
    /// CCS accepted one of our downstream messages.
    Ack(Ack),
    /// CCS refused one of our downstream messages.
    Nack(Nack),
    /// A delivery receipt for a downstream message sent with `delivery_receipt_requested`.
    Receipt(Receipt),
    /// A control message, such as `CONNECTION_DRAINING`.
    Control(Control),
    /// A `message_type` this crate does not know: reported, never dropped, never acked.
    Unknown {
        /// The `message_type` value.
        message_type: String,
        /// Every other field of the object, as received.
        json: Map<String, Value>,
    },
}

impl Incoming {
    /// The ack to send for this message: for an [`Upstream`] message or a [`Receipt`],
    /// `to` = its `from` and its `message_id` verbatim; `None` for everything else (acks,
    /// nacks, control and unknown messages are never acked).
    pub fn ack_for(&self) -> Option<AppAck> {
        match self {
            Self::Upstream(m) => Some(m.ack()),
            Self::Receipt(r) => Some(r.ack()),
            Self::Ack(_) | Self::Nack(_) | Self::Control(_) | Self::Unknown { .. } => None,
        }
    }

    /// The `message_id`, for the variants that have one as a typed field.
    pub fn message_id(&self) -> Option<&MessageId> {
        match self {
            Self::Upstream(m) => Some(&m.message_id),
            Self::Ack(a) => Some(&a.message_id),
            Self::Nack(n) => Some(&n.message_id),
            Self::Receipt(r) => Some(&r.message_id),
            Self::Control(_) | Self::Unknown { .. } => None,
        }
    }
}

/// An upstream message: a device sent something to the app server. Ack it with
/// [`Upstream::ack`] on the connection it arrived on.
///
/// Only `from` and `message_id` are required (strings). `category`, `data` and
/// `time_to_live` are typed when they have their documented type (`time_to_live` also from a
/// string of digits or an integral float); otherwise the typed field is empty and the value
/// is in `extra`, under its own name, as received. When serialized, such an `extra` entry is
/// written in place of the empty field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `from`: the registration token of the sending app instance.
    pub from: String,
    /// `category`: the package name (or iOS bundle id) of the sending app; `None` when
    /// absent or not a string.
    pub category: Option<String>,
    /// `message_id`: chosen by the device.
    pub message_id: MessageId,
    /// `data`: the payload (empty when the field was absent or not an object).
    pub data: Map<String, Value>,
    /// `time_to_live` in seconds, when present as a non-negative integer, a string of ASCII
    /// digits or an integral float (seen on the wire, not documented).
    pub time_to_live: Option<u64>,
    /// Every other field, and `category`, `data` or `time_to_live` when its value had
    /// another type.
    pub extra: Map<String, Value>,
}

impl Upstream {
    /// The ack for this message.
    pub fn ack(&self) -> AppAck {
        AppAck {
            to: self.from.clone(),
            message_id: self.message_id.clone(),
        }
    }
}

/// CCS accepted a downstream message.
///
/// `message_id` is required (a string); `from` and `registration_id` are `None` when absent
/// or not strings, and a value of another type is kept in `extra`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// `from`: the registration token the message was addressed to (not always sent).
    pub from: Option<String>,
    /// `message_id`: the id of our downstream message.
    pub message_id: MessageId,
    /// `registration_id`: the canonical token that should replace `from` in the app
    /// server's records.
    pub registration_id: Option<String>,
    /// Every other field, and `from` or `registration_id` when not a string.
    pub extra: Map<String, Value>,
}

impl Ack {
    /// An ack for `message_id`, with no other field.
    pub fn new(message_id: MessageId) -> Self {
        Self {
            from: None,
            message_id,
            registration_id: None,
            extra: Map::new(),
        }
    }
}

/// A control message. It has no `message_id` and is never acked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    /// `control_type`.
    pub control_type: ControlType,
    /// Every other field.
    pub extra: Map<String, Value>,
}

impl Control {
    /// The `CONNECTION_DRAINING` control message.
    pub fn connection_draining() -> Self {
        Self {
            control_type: ControlType::ConnectionDraining,
            extra: Map::new(),
        }
    }
}

/// The `control_type` of a [`Control`] message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ControlType {
    /// `CONNECTION_DRAINING`: CCS will close this connection soon. Send nothing new on it,
    /// open another at once, and keep reading and acking on this one until CCS closes it.
    ConnectionDraining,
    /// Any other control type, kept as received: report it, do not act on it.
    Unknown(String),
}

impl ControlType {
    /// The JSON string.
    pub fn as_str(&self) -> &str {
        match self {
            Self::ConnectionDraining => "CONNECTION_DRAINING",
            Self::Unknown(s) => s,
        }
    }

    /// The control type a string names; unknown ones become [`ControlType::Unknown`].
    pub fn parse(s: &str) -> Self {
        match s {
            "CONNECTION_DRAINING" => Self::ConnectionDraining,
            other => Self::Unknown(other.to_owned()),
        }
    }
}

impl fmt::Display for ControlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Upstream {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut f = Fields::new(s.serialize_map(None)?);
        f.entry(IKey::From, &self.from)?;
        f.optional(IKey::Category, self.category.as_ref())?;
        f.entry(IKey::MessageId, &self.message_id)?;
        // An empty `data` gives way to one kept in `extra` (a value that was not an object).
        if !self.data.is_empty() || !self.extra.contains_key(IKey::Data.name()) {
            f.entry(IKey::Data, &self.data)?;
        }
        f.optional(IKey::TimeToLive, self.time_to_live.as_ref())?;
        f.end(&self.extra)
    }
}

impl Serialize for Ack {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut f = Fields::new(s.serialize_map(None)?);
        f.entry(IKey::MessageType, "ack")?;
        f.optional(IKey::From, self.from.as_ref())?;
        f.entry(IKey::MessageId, &self.message_id)?;
        f.optional(IKey::RegistrationId, self.registration_id.as_ref())?;
        f.end(&self.extra)
    }
}

impl Serialize for Control {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut f = Fields::new(s.serialize_map(None)?);
        f.entry(IKey::MessageType, "control")?;
        f.entry(IKey::ControlType, self.control_type.as_str())?;
        f.end(&self.extra)
    }
}

impl Serialize for Incoming {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Upstream(v) => v.serialize(s),
            Self::Ack(v) => v.serialize(s),
            Self::Nack(v) => v.serialize(s),
            Self::Receipt(v) => v.serialize(s),
            Self::Control(v) => v.serialize(s),
            Self::Unknown { message_type, json } => {
                let mut f = Fields::new(s.serialize_map(None)?);
                f.entry(IKey::MessageType, message_type)?;
                f.end(json)
            }
        }
    }
}

/// A known field of an incoming message, read before `message_type` may be known: kept in the
/// shape it came in, typed once the kind of message is known. Strings, unsigned integers and
/// objects (the shapes CCS uses) are held without building a `Value`.
enum Any {
    Null,
    Str(String),
    U64(u64),
    Obj(Map<String, Value>),
    Other(Value),
    /// A `message_type` string, matched without allocating when it is a known one.
    Kind(Kind),
}

/// A `message_type` value.
enum Kind {
    Ack,
    Nack,
    Receipt,
    Control,
    Other(String),
}

impl Kind {
    fn parse(s: &str) -> Self {
        match s {
            "ack" => Self::Ack,
            "nack" => Self::Nack,
            "receipt" => Self::Receipt,
            "control" => Self::Control,
            other => Self::Other(other.to_owned()),
        }
    }

    fn into_string(self) -> String {
        match self {
            Self::Ack => "ack".to_owned(),
            Self::Nack => "nack".to_owned(),
            Self::Receipt => "receipt".to_owned(),
            Self::Control => "control".to_owned(),
            Self::Other(s) => s,
        }
    }
}

/// Reads `message_type`: a string becomes [`Any::Kind`], anything else is kept as [`Any`]
/// for the error message.
struct KindSeed;

impl<'de> DeserializeSeed<'de> for KindSeed {
    type Value = Any;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Any, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KindSeed {
    type Value = Any;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("`message_type`")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Any, E> {
        Ok(Any::Kind(Kind::parse(v)))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Any, E> {
        AnyVisitor.visit_bool(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Any, E> {
        AnyVisitor.visit_i64(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Any, E> {
        AnyVisitor.visit_u64(v)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Any, E> {
        AnyVisitor.visit_f64(v)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Any, E> {
        Ok(Any::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Any, A::Error> {
        AnyVisitor.visit_seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Any, A::Error> {
        AnyVisitor.visit_map(map)
    }
}

impl Any {
    fn into_value(self) -> Value {
        match self {
            Self::Null => Value::Null,
            Self::Str(s) => Value::String(s),
            Self::U64(n) => Value::from(n),
            Self::Obj(m) => Value::Object(m),
            Self::Other(v) => v,
            Self::Kind(k) => Value::String(k.into_string()),
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Null => "null".to_owned(),
            Self::Str(_) => "a string".to_owned(),
            Self::U64(n) => format!("the number {n}"),
            Self::Obj(_) => "an object".to_owned(),
            Self::Other(v) => describe(v),
            Self::Kind(_) => "a string".to_owned(),
        }
    }
}

impl<'de> Deserialize<'de> for Any {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(AnyVisitor)
    }
}

struct AnyVisitor;

impl<'de> Visitor<'de> for AnyVisitor {
    type Value = Any;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Any, E> {
        Ok(Any::Other(Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Any, E> {
        Ok(match u64::try_from(v) {
            Ok(u) => Any::U64(u),
            Err(_) => Any::Other(Value::from(v)),
        })
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Any, E> {
        Ok(Any::U64(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Any, E> {
        Ok(Any::Other(Value::from(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Any, E> {
        Ok(Any::Str(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Any, E> {
        Ok(Any::Str(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Any, E> {
        Ok(Any::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Any, E> {
        Ok(Any::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Any, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Any, A::Error> {
        Value::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(Any::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Any, A::Error> {
        collect_map(&mut map).map(Any::Obj)
    }
}

/// The known fields of an incoming message, indexed by [`IKey`], plus every other field.
struct IncomingFields {
    // One slot per `IKey` variant; the variants have the default discriminants 0..n, so
    // `slots[key as usize]` is always in bounds.
    slots: [Option<Any>; IKey::ALL.len()],
    extra: Map<String, Value>,
}

struct IncomingVisitor;

impl<'de> Visitor<'de> for IncomingVisitor {
    type Value = Incoming;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a CCS message (a JSON object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Incoming, A::Error> {
        let mut fields = IncomingFields {
            slots: Default::default(),
            extra: Map::new(),
        };
        while let Some(key) = map.next_key::<Key<IKey>>()? {
            match key {
                Key::Known(IKey::MessageType) => {
                    let v = map.next_value_seed(KindSeed)?;
                    put(
                        &mut fields.slots[IKey::MessageType as usize],
                        "message_type",
                        v,
                    )?;
                }
                Key::Known(k) => {
                    let v = map.next_value::<Any>()?;
                    put(&mut fields.slots[k as usize], k.name(), v)?;
                }
                Key::Other(name) => {
                    let v: Value = map.next_value()?;
                    fields.extra.insert(name, v);
                }
            }
        }
        fields.build()
    }
}

impl<'de> Deserialize<'de> for Incoming {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(IncomingVisitor)
    }
}

impl IncomingFields {
    fn take(&mut self, k: IKey) -> Option<Any> {
        self.slots[k as usize].take()
    }

    fn required_str<E: de::Error>(&mut self, k: IKey) -> Result<String, E> {
        match self.take(k) {
            Some(Any::Str(s)) => Ok(s),
            None => Err(E::missing_field(k.name())),
            Some(other) => Err(wrong_type(k.name(), &other.describe(), "a string")),
        }
    }

    /// An optional string: `None` when absent or null. A value of another type is put back
    /// in its slot, for [`IncomingFields::rest`] to keep in `extra` as received; so are the
    /// other `lenient_*` readers.
    fn lenient_str(&mut self, k: IKey) -> Option<String> {
        match self.take(k)? {
            Any::Str(s) => Some(s),
            other => {
                self.put_back(k, other);
                None
            }
        }
    }

    /// An optional object: empty when absent or null.
    fn lenient_object(&mut self, k: IKey) -> Map<String, Value> {
        match self.take(k) {
            Some(Any::Obj(m)) => m,
            None => Map::new(),
            Some(other) => {
                self.put_back(k, other);
                Map::new()
            }
        }
    }

    /// An optional count of seconds: a non-negative integer, a string of ASCII digits, or a
    /// number with an integral value, each within `u64`.
    fn lenient_seconds(&mut self, k: IKey) -> Option<u64> {
        let v = self.take(k)?;
        let seconds = match &v {
            Any::U64(n) => Some(*n),
            Any::Str(s) => digits_u64(s),
            Any::Other(Value::Number(n)) => n.as_f64().and_then(integral_u64),
            _ => None,
        };
        if seconds.is_none() {
            self.put_back(k, v);
        }
        seconds
    }

    /// Puts a value that is not of its field's type back in its slot (null is dropped: it
    /// means absent).
    fn put_back(&mut self, k: IKey, v: Any) {
        if !matches!(v, Any::Null) {
            self.slots[k as usize] = Some(v);
        }
    }

    /// Moves the known fields the message kind did not read into `extra`, and returns it.
    fn rest(&mut self) -> Map<String, Value> {
        for (slot, key) in self.slots.iter_mut().zip(IKey::ALL) {
            if let Some(v) = slot.take() {
                self.extra.insert(key.name().to_owned(), v.into_value());
            }
        }
        std::mem::take(&mut self.extra)
    }

    // Each kind takes its fields out of the table; `rest` then sweeps up the others. Only the
    // fields a kind cannot do without are errors (see the module documentation).
    fn build<E: de::Error>(&mut self) -> Result<Incoming, E> {
        let message_type = match self.take(IKey::MessageType) {
            None | Some(Any::Null) => None,
            Some(Any::Kind(kind)) => Some(kind),
            Some(Any::Str(s)) => Some(Kind::parse(&s)),
            Some(other) => {
                return Err(wrong_type("message_type", &other.describe(), "a string"));
            }
        };
        let Some(message_type) = message_type else {
            let from = self.required_str(IKey::From)?;
            let message_id = MessageId(self.required_str(IKey::MessageId)?.into());
            return Ok(Incoming::Upstream(Upstream {
                from,
                category: self.lenient_str(IKey::Category),
                message_id,
                data: self.lenient_object(IKey::Data),
                time_to_live: self.lenient_seconds(IKey::TimeToLive),
                extra: self.rest(),
            }));
        };
        Ok(match message_type {
            Kind::Ack => {
                let message_id = MessageId(self.required_str(IKey::MessageId)?.into());
                Incoming::Ack(Ack {
                    from: self.lenient_str(IKey::From),
                    message_id,
                    registration_id: self.lenient_str(IKey::RegistrationId),
                    extra: self.rest(),
                })
            }
            Kind::Nack => {
                let message_id = MessageId(self.required_str(IKey::MessageId)?.into());
                let raw_error = self.lenient_str(IKey::Error).unwrap_or_default();
                Incoming::Nack(Nack {
                    from: self.lenient_str(IKey::From),
                    message_id,
                    error: NackCode::parse(&raw_error),
                    raw_error,
                    error_description: self.lenient_str(IKey::ErrorDescription),
                    extra: self.rest(),
                })
            }
            Kind::Receipt => {
                let from = self.required_str(IKey::From)?;
                let message_id = MessageId(self.required_str(IKey::MessageId)?.into());
                let data = self.lenient_object(IKey::Data);
                Incoming::Receipt(Receipt::received(
                    from,
                    message_id,
                    self.lenient_str(IKey::Category),
                    data,
                    self.rest(),
                ))
            }
            Kind::Control => {
                let control_type = ControlType::parse(&self.required_str(IKey::ControlType)?);
                Incoming::Control(Control {
                    control_type,
                    extra: self.rest(),
                })
            }
            Kind::Other(message_type) => Incoming::Unknown {
                message_type,
                json: self.rest(),
            },
        })
    }
}

impl Incoming {
    /// [`Incoming::from_json`] without its fast path: the text is decoded in one pass
    /// without building a `serde_json::Value`. Only when that fails (a field given twice, or
    /// an error) is it parsed again as a `Value`, in which each name keeps its last value;
    /// that second decoding is used if it gives an upstream message or a receipt, and
    /// otherwise the first error is returned.
    pub(crate) fn from_json_general(json: &str) -> Result<Self, JsonError> {
        match serde_json::from_str(json) {
            Ok(m) => Ok(m),
            Err(e) => Self::ackable_last_values(json).ok_or_else(|| e.into()),
        }
    }

    /// The slow path of [`Incoming::from_json`], taken only when the one-pass decoding
    /// failed: the text parsed as a `Value` (each name keeps its last value) and decoded
    /// again, kept only when it is a message that must be acked.
    fn ackable_last_values(json: &str) -> Option<Self> {
        let value: Value = serde_json::from_str(json).ok()?;
        match Self::deserialize(value) {
            Ok(m @ (Self::Upstream(_) | Self::Receipt(_))) => Some(m),
            _ => None,
        }
    }
}

/// A float with an integral value in `0..2^64`, as a `u64`.
fn integral_u64(f: f64) -> Option<u64> {
    // 2^64 is exact as an f64; every integral f64 below it fits in a u64.
    const TWO_TO_64: f64 = 18_446_744_073_709_551_616.0;
    if (0.0..TWO_TO_64).contains(&f) && f.fract() == 0.0 {
        // In range and integral, so the cast is exact.
        Some(f as u64)
    } else {
        None
    }
}

fn wrong_type<E: de::Error>(field: &str, found: &str, expected: &str) -> E {
    E::custom(format_args!(
        "invalid type for `{field}`: {found}, expected {expected}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    /// The fields each incoming kind reads when they are well typed (besides
    /// `message_type`); the other known names land in `extra`.
    const UPSTREAM_KEYS: &[IKey] = &[
        IKey::From,
        IKey::Category,
        IKey::MessageId,
        IKey::Data,
        IKey::TimeToLive,
    ];
    const ACK_KEYS: &[IKey] = &[IKey::From, IKey::MessageId, IKey::RegistrationId];
    const NACK_KEYS: &[IKey] = &[
        IKey::From,
        IKey::MessageId,
        IKey::Error,
        IKey::ErrorDescription,
    ];
    const RECEIPT_KEYS: &[IKey] = &[IKey::From, IKey::MessageId, IKey::Category, IKey::Data];
    const CONTROL_KEYS: &[IKey] = &[IKey::ControlType];

    #[test]
    fn incoming_extra_never_shadows_typed_fields() {
        // A hand-built value with colliding extra entries still serializes to one key each.
        let mut ack = Ack::new(MessageId::new("m-1").unwrap());
        ack.extra.insert("message_id".into(), json!("other"));
        ack.extra.insert("message_type".into(), json!("nack"));
        let text = serde_json::to_string(&ack).unwrap();
        assert_eq!(text, r#"{"message_type":"ack","message_id":"m-1"}"#);
    }

    #[test]
    fn each_kind_reads_exactly_its_key_list() {
        let all = json!({
            "from": "f", "category": "c", "message_id": "m", "data": {"message_status": "S"},
            "time_to_live": 1, "registration_id": "r", "error": "BAD_ACK",
            "error_description": "d", "control_type": "CONNECTION_DRAINING",
        });
        let kinds: [(Option<&str>, &[IKey]); 5] = [
            (None, UPSTREAM_KEYS),
            (Some("ack"), ACK_KEYS),
            (Some("nack"), NACK_KEYS),
            (Some("receipt"), RECEIPT_KEYS),
            (Some("control"), CONTROL_KEYS),
        ];
        for (message_type, keys) in kinds {
            let mut object = all.clone();
            if let Some(t) = message_type {
                object["message_type"] = json!(t);
            }
            let m = Incoming::from_json(&object.to_string()).unwrap();
            let extra = match &m {
                Incoming::Upstream(x) => &x.extra,
                Incoming::Ack(x) => &x.extra,
                Incoming::Nack(x) => &x.extra,
                Incoming::Receipt(x) => &x.extra,
                Incoming::Control(x) => &x.extra,
                Incoming::Unknown { .. } => panic!("unknown"),
            };
            let mut expected: Vec<&str> = IKey::ALL
                .iter()
                .filter(|k| **k != IKey::MessageType && !keys.contains(k))
                .map(|k| k.name())
                .collect();
            expected.sort_unstable();
            let got: Vec<&str> = extra.keys().map(String::as_str).collect();
            assert_eq!(got, expected, "{message_type:?}");
        }
    }

    #[test]
    fn ikey_lists_hold_no_message_type() {
        for keys in [
            UPSTREAM_KEYS,
            ACK_KEYS,
            NACK_KEYS,
            RECEIPT_KEYS,
            CONTROL_KEYS,
        ] {
            assert!(!keys.contains(&IKey::MessageType));
        }
    }
}
