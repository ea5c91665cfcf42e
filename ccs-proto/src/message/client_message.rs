//! What an app server sends, as the server role decodes it: [`ClientMessage`], that is a
//! [`Downstream`] or an [`AppAck`], read strictly in one pass.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::downstream::{DKey, Downstream, Priority, TimeToLive};
use super::id::{MessageId, RegistrationId};
use super::notification::Notification;
use super::{Key, StrSeed, collect_map, put};
use crate::error::JsonError;

/// The ack an app server sends for an upstream message or a receipt:
/// `{"to":…,"message_id":…,"message_type":"ack"}`.
///
/// `to` is the `from` of the message being acked (`gcm.googleapis.com` for a receipt) and
/// `message_id` is its id verbatim (a receipt's keeps its `dr2:` prefix). Get one from
/// [`Incoming::ack_for`](super::Incoming::ack_for). When decoded (server role), fields other
/// than these three are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AppAck {
    /// The `from` of the acked message.
    pub to: String,
    /// The `message_id` of the acked message.
    pub message_id: MessageId,
}

/// What an app server sends to CCS, as the server role decodes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// No `message_type`: a downstream message.
    Downstream(Downstream),
    /// `message_type` `"ack"`: the ack of an upstream message or a receipt.
    Ack(AppAck),
}

impl ClientMessage {
    /// Decodes the JSON text of one `<gcm>` element sent by an app server, dispatching on
    /// `message_type`: absent = [`ClientMessage::Downstream`], `"ack"` =
    /// [`ClientMessage::Ack`]; anything else (including `"nack"`, which an app server never
    /// sends) is an error.
    pub fn from_json(json: &str) -> Result<Self, JsonError> {
        Ok(serde_json::from_str(json)?)
    }
}

impl Serialize for AppAck {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("to", &self.to)?;
        m.serialize_entry("message_id", &self.message_id)?;
        m.serialize_entry("message_type", "ack")?;
        m.end()
    }
}

impl Serialize for ClientMessage {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Downstream(d) => d.serialize(s),
            Self::Ack(a) => a.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Downstream {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ClientVisitor)?.downstream()
    }
}

impl<'de> Deserialize<'de> for AppAck {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ClientVisitor)?.ack()
    }
}

impl<'de> Deserialize<'de> for ClientMessage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ClientVisitor)?.client_message()
    }
}

/// Everything an app server's message may carry, read once; then split by `message_type`.
struct ClientFields {
    message_type: Option<String>,
    message_id: Option<String>,
    msg: Downstream,
}

struct ClientVisitor;

impl<'de> Visitor<'de> for ClientVisitor {
    type Value = ClientFields;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a CCS message from an app server (a JSON object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ClientFields, A::Error> {
        let mut message_type = None;
        let mut message_id = None;
        // The id is filled in below; an empty placeholder costs no allocation.
        let mut msg = Downstream::empty(None, None, MessageId(Default::default()));
        while let Some(key) = map.next_key::<Key<DKey>>()? {
            let key = match key {
                Key::Known(k) => k,
                Key::Other(name) => {
                    let v: Value = map.next_value()?;
                    msg.extra.insert(name, v);
                    continue;
                }
            };
            let name = key.name();
            // Reads the value with `seed` into `slot`, refusing a second occurrence.
            macro_rules! read {
                ($slot:expr, $seed:expr) => {{
                    let v = map.next_value_seed($seed)?;
                    put(&mut $slot, name, v)?;
                }};
            }
            match key {
                DKey::To => read!(msg.to, StrSeed(name).map(RegistrationId)),
                DKey::Condition => read!(msg.condition, StrSeed(name)),
                DKey::MessageId => read!(message_id, StrSeed(name)),
                DKey::CollapseKey => read!(msg.collapse_key, StrSeed(name)),
                DKey::Priority => read!(msg.priority, PhantomData::<Priority>),
                DKey::ContentAvailable => read!(msg.content_available, BoolSeed(name)),
                DKey::MutableContent => read!(msg.mutable_content, BoolSeed(name)),
                DKey::TimeToLive => read!(msg.time_to_live, PhantomData::<TimeToLive>),
                DKey::DelayWhileIdle => read!(msg.delay_while_idle, BoolSeed(name)),
                DKey::DeliveryReceiptRequested => {
                    read!(msg.delivery_receipt_requested, BoolSeed(name));
                }
                DKey::DryRun => read!(msg.dry_run, BoolSeed(name)),
                DKey::Data => read!(msg.data, ObjSeed(name)),
                DKey::Notification => read!(msg.notification, PhantomData::<Box<Notification>>),
                DKey::MessageType => read!(message_type, StrSeed(name)),
            }
        }
        Ok(ClientFields {
            message_type,
            message_id,
            msg,
        })
    }
}

impl ClientFields {
    fn downstream<E: de::Error>(self) -> Result<Downstream, E> {
        if let Some(t) = self.message_type {
            return Err(E::custom(format_args!(
                "not a downstream message: it has `message_type` {t:?}"
            )));
        }
        let mut msg = self.msg;
        msg.message_id = MessageId(
            self.message_id
                .ok_or_else(|| E::missing_field("message_id"))?
                .into(),
        );
        Ok(msg)
    }

    fn ack<E: de::Error>(self) -> Result<AppAck, E> {
        if self.message_type.as_deref() != Some("ack") {
            return Err(E::custom("not an ack: `message_type` is not \"ack\""));
        }
        Ok(AppAck {
            to: self.msg.to.ok_or_else(|| E::missing_field("to"))?.0,
            message_id: MessageId(
                self.message_id
                    .ok_or_else(|| E::missing_field("message_id"))?
                    .into(),
            ),
        })
    }

    fn client_message<E: de::Error>(self) -> Result<ClientMessage, E> {
        match self.message_type.as_deref() {
            None => self.downstream().map(ClientMessage::Downstream),
            Some("ack") => self.ack().map(ClientMessage::Ack),
            Some("nack") => Err(E::custom(
                "an app server never sends a nack (`message_type` \"nack\")",
            )),
            Some(other) => Err(E::custom(format_args!(
                "unknown `message_type` {other:?} from an app server: expected none (a downstream \
                 message) or \"ack\""
            ))),
        }
    }
}

/// A boolean field.
struct BoolSeed(&'static str);

impl<'de> DeserializeSeed<'de> for BoolSeed {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_bool(self)
    }
}

impl Visitor<'_> for BoolSeed {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` as a boolean (true or false)", self.0)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        Ok(v)
    }
}

/// An object field.
struct ObjSeed(&'static str);

impl<'de> DeserializeSeed<'de> for ObjSeed {
    type Value = Map<String, Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ObjSeed {
    type Value = Map<String, Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` as a JSON object", self.0)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        collect_map(&mut map)
    }
}
