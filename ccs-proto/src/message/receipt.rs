//! Delivery receipts: [`Receipt`] and [`ReceiptStatus`].

use std::fmt;

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::{Map, Value};

use super::client_message::AppAck;
use super::id::MessageId;
use super::{Fields, IKey, digits_u64};

/// A delivery receipt. Ack it with [`Receipt::ack`] (its `message_id` keeps the `dr2:`
/// prefix).
///
/// `data` is the whole `data` object as received; `status`, `original_message_id`,
/// `device_registration_id` and `sent_timestamp` are decoded from it. When serialized, `data`
/// is written with those four entries taken from the typed fields wherever the two disagree.
///
/// Only `from` and `message_id` are required (strings), so that every receipt can be acked.
/// The rest is lenient: `category` or `data` of another type is kept in `extra` (and `data`
/// is then empty); a `data.message_status` that is absent or not a string gives
/// [`ReceiptStatus::Other`] with an empty string, and the other three `data` entries give
/// `None` when they do not have their type. `data` keeps those entries as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// `from`: `gcm.googleapis.com`.
    pub from: String,
    /// `message_id`: `dr2:` followed by the id of the downstream message.
    pub message_id: MessageId,
    /// `category`: the package name of the receiving app; `None` when absent or not a
    /// string.
    pub category: Option<String>,
    /// `data.message_status` ([`ReceiptStatus::Other`] with an empty string when it was
    /// absent or not a string).
    pub status: ReceiptStatus,
    /// `data.original_message_id`: the id of the downstream message (`None` when absent or
    /// not a string).
    pub original_message_id: Option<MessageId>,
    /// `data.device_registration_id`: the token the message was delivered to (`None` when
    /// absent or not a string).
    pub device_registration_id: Option<String>,
    /// `data.message_sent_timestamp`: when the message was sent to the device, in
    /// milliseconds since the Unix epoch (sent as a string of digits; a number is accepted;
    /// `None` when absent or anything else).
    pub sent_timestamp: Option<u64>,
    /// `data`, whole (empty when the field was absent or not an object).
    pub data: Map<String, Value>,
    /// Every other field (for example the `time_to_live` seen on real receipts), and
    /// `category` or `data` when its value had another type.
    pub extra: Map<String, Value>,
}

impl Receipt {
    /// The receipt CCS sends when a message reached its device: `from`
    /// `gcm.googleapis.com`, `message_id` `dr2:<original>`, status
    /// [`ReceiptStatus::MessageSentToDevice`], and `data` filled to match.
    pub fn sent_to_device(
        original_message_id: &MessageId,
        device_registration_id: impl Into<String>,
        sent_timestamp_ms: u64,
    ) -> Self {
        let device_registration_id = device_registration_id.into();
        let mut data = Map::new();
        let status = ReceiptStatus::MessageSentToDevice;
        data.insert(
            "message_status".to_owned(),
            Value::String(status.as_str().to_owned()),
        );
        data.insert(
            "original_message_id".to_owned(),
            Value::String(original_message_id.as_str().to_owned()),
        );
        data.insert(
            "device_registration_id".to_owned(),
            Value::String(device_registration_id.clone()),
        );
        data.insert(
            "message_sent_timestamp".to_owned(),
            Value::String(sent_timestamp_ms.to_string()),
        );
        Self {
            from: "gcm.googleapis.com".to_owned(),
            message_id: MessageId(format!("dr2:{}", original_message_id.as_str()).into()),
            category: None,
            status,
            original_message_id: Some(original_message_id.clone()),
            device_registration_id: Some(device_registration_id),
            sent_timestamp: Some(sent_timestamp_ms),
            data,
            extra: Map::new(),
        }
    }

    /// The ack for this receipt.
    pub fn ack(&self) -> AppAck {
        AppAck {
            to: self.from.clone(),
            message_id: self.message_id.clone(),
        }
    }

    /// A receipt as decoded from CCS: the typed fields are read from `data`, leniently (see
    /// the type's documentation), and `data` is kept whole.
    pub(super) fn received(
        from: String,
        message_id: MessageId,
        category: Option<String>,
        data: Map<String, Value>,
        extra: Map<String, Value>,
    ) -> Self {
        Self {
            from,
            message_id,
            category,
            status: receipt_status_of(data.get("message_status")),
            original_message_id: data_str_of(data.get("original_message_id"))
                .map(|s| MessageId(s.into())),
            device_registration_id: data_str_of(data.get("device_registration_id"))
                .map(str::to_owned),
            sent_timestamp: data.get("message_sent_timestamp").and_then(timestamp_of),
            data,
            extra,
        }
    }
}

/// The `message_status` of a [`Receipt`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReceiptStatus {
    /// `MESSAGE_SENT_TO_DEVICE`: the device received the message.
    MessageSentToDevice,
    /// Any other status, kept as received; empty when `data.message_status` was absent or
    /// not a string.
    Other(String),
}

impl ReceiptStatus {
    /// The JSON string.
    pub fn as_str(&self) -> &str {
        match self {
            Self::MessageSentToDevice => "MESSAGE_SENT_TO_DEVICE",
            Self::Other(s) => s,
        }
    }

    /// The status a string names; unknown ones become [`ReceiptStatus::Other`].
    pub fn parse(s: &str) -> Self {
        match s {
            "MESSAGE_SENT_TO_DEVICE" => Self::MessageSentToDevice,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for ReceiptStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Receipt {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut f = Fields::new(s.serialize_map(None)?);
        f.entry(IKey::MessageType, "receipt")?;
        f.entry(IKey::From, &self.from)?;
        f.entry(IKey::MessageId, &self.message_id)?;
        f.optional(IKey::Category, self.category.as_ref())?;
        // A `data` with nothing in it gives way to one kept in `extra` (not an object).
        if !receipt_data_is_empty(self) || !self.extra.contains_key(IKey::Data.name()) {
            f.entry(IKey::Data, &ReceiptData(self))?;
        }
        f.end(&self.extra)
    }
}

/// Whether a receipt status is the one an absent `data.message_status` decodes to.
fn is_empty_status(status: &ReceiptStatus) -> bool {
    matches!(status, ReceiptStatus::Other(s) if s.is_empty())
}

/// Whether [`ReceiptData`] would write an empty object for this receipt.
fn receipt_data_is_empty(r: &Receipt) -> bool {
    r.data.is_empty()
        && is_empty_status(&r.status)
        && r.original_message_id.is_none()
        && r.device_registration_id.is_none()
        && r.sent_timestamp.is_none()
}

/// A receipt's `data`, with the typed fields written over the entries they disagree with.
/// An entry that decodes to the typed value is written as received (a `message_status` that
/// is not a string when the status is empty, a timestamp as a number, a null).
struct ReceiptData<'a>(&'a Receipt);

impl Serialize for ReceiptData<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let original = r.original_message_id.as_ref().map(MessageId::as_str);
        let device = r.device_registration_id.as_deref();
        let empty_status = is_empty_status(&r.status);
        let mut m = s.serialize_map(None)?;
        let (mut status, mut original_seen, mut device_seen, mut sent) =
            (false, false, false, false);
        for (k, v) in &r.data {
            match k.as_str() {
                "message_status" => {
                    status = true;
                    if empty_status && !v.is_string() {
                        m.serialize_entry(k, v)?;
                    } else {
                        m.serialize_entry(k, r.status.as_str())?;
                    }
                }
                "original_message_id" => {
                    original_seen = true;
                    write_data_str(&mut m, k, v, original)?;
                }
                "device_registration_id" => {
                    device_seen = true;
                    write_data_str(&mut m, k, v, device)?;
                }
                "message_sent_timestamp" => {
                    sent = true;
                    match r.sent_timestamp {
                        t if timestamp_of(v) == t => m.serialize_entry(k, v)?,
                        Some(t) => m.serialize_entry(k, &t.to_string())?,
                        None => {}
                    }
                }
                _ => m.serialize_entry(k, v)?,
            }
        }
        if !status && !empty_status {
            m.serialize_entry("message_status", r.status.as_str())?;
        }
        if let (false, Some(id)) = (original_seen, original) {
            m.serialize_entry("original_message_id", id)?;
        }
        if let (false, Some(id)) = (device_seen, device) {
            m.serialize_entry("device_registration_id", id)?;
        }
        if let (false, Some(t)) = (sent, r.sent_timestamp) {
            m.serialize_entry("message_sent_timestamp", &t.to_string())?;
        }
        m.end()
    }
}

/// A receipt `data` entry that must be a string: the typed value when there is one, else the
/// entry as received unless it is a string (that would decode to a value, not `None`).
fn write_data_str<M: SerializeMap>(
    m: &mut M,
    key: &str,
    received: &Value,
    typed: Option<&str>,
) -> Result<(), M::Error> {
    match typed {
        Some(t) => m.serialize_entry(key, t),
        None if !received.is_string() => m.serialize_entry(key, received),
        None => Ok(()),
    }
}

/// A receipt's status from its `data.message_status`: [`ReceiptStatus::Other`] with an empty
/// string when that is absent or not a string.
fn receipt_status_of(v: Option<&Value>) -> ReceiptStatus {
    match v {
        Some(Value::String(s)) => ReceiptStatus::parse(s),
        _ => ReceiptStatus::Other(String::new()),
    }
}

/// A receipt's `data` entry that must be a string.
fn data_str_of(v: Option<&Value>) -> Option<&str> {
    match v {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

/// A receipt's `message_sent_timestamp`: a string of ASCII digits or a non-negative JSON
/// integer, within `u64`; `None` for anything else.
fn timestamp_of(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => digits_u64(s),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    #[test]
    fn receipt_typed_fields_win_when_data_disagrees() {
        let id = MessageId::new("39").unwrap();
        let mut r = Receipt::sent_to_device(&id, "dev", 1_498_801_519_251);
        r.data
            .insert("message_sent_timestamp".into(), json!(1_498_801_519_251u64));
        // The number form agrees with the typed value and is kept as is.
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v["data"]["message_sent_timestamp"],
            json!(1_498_801_519_251u64)
        );
        r.sent_timestamp = Some(5);
        r.device_registration_id = None;
        r.status = ReceiptStatus::Other("MESSAGE_READ".into());
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["data"]["message_sent_timestamp"], "5");
        assert_eq!(v["data"]["message_status"], "MESSAGE_READ");
        assert!(v["data"].get("device_registration_id").is_none());
    }
}
