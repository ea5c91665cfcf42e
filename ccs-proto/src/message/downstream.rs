//! What the app server sends to devices: [`Downstream`], its builder, and the [`TimeToLive`]
//! and [`Priority`] field types; serialized field by field.

use std::fmt;
use std::time::Duration;

use serde::de::{self, DeserializeSeed, Deserializer, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::id::{MessageId, RegistrationId};
use super::notification::Notification;
use super::{StrSeed, describe, field_names};
use crate::error::UsageError;

/// A message from the app server to devices, through CCS.
///
/// Build one with [`Downstream::builder`] (to a registration token, topic or notification key)
/// or [`Downstream::builder_condition`] (to a topic condition). `Serialize` writes exactly the
/// CCS field names, only for the fields that are set, with no intermediate `Value`;
/// `Deserialize` (used by the server role) is strict on types: `time_to_live` must be an
/// integer in range, booleans must be booleans, `data` and `notification` must be objects.
/// Unknown fields are kept in [`Downstream::extra`]. Decoding does not require `to` or
/// `condition`: judging that is the server's job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downstream {
    pub(super) to: Option<RegistrationId>,
    pub(super) condition: Option<String>,
    pub(super) message_id: MessageId,
    pub(super) collapse_key: Option<String>,
    pub(super) priority: Option<Priority>,
    pub(super) content_available: Option<bool>,
    pub(super) mutable_content: Option<bool>,
    pub(super) time_to_live: Option<TimeToLive>,
    pub(super) delay_while_idle: Option<bool>,
    pub(super) delivery_receipt_requested: Option<bool>,
    pub(super) dry_run: Option<bool>,
    pub(super) data: Option<Map<String, Value>>,
    // Boxed: most messages have none, and a `Downstream` is moved through queues.
    pub(super) notification: Option<Box<Notification>>,
    pub(super) extra: Map<String, Value>,
}

impl Downstream {
    /// Starts a message to `to` (a registration token, `/topics/name`, or a notification key)
    /// with the given `message_id` (unique per sender id; acks and nacks echo it).
    ///
    /// Errors when `to` or `message_id` is empty or holds a character XML cannot carry, or
    /// when `message_id` is longer than [`MessageId::MAX_LEN`] bytes.
    pub fn builder(
        to: impl Into<String>,
        message_id: impl Into<String>,
    ) -> Result<DownstreamBuilder, UsageError> {
        let to = RegistrationId::new(to)?;
        let message_id = MessageId::new(message_id)?;
        Ok(DownstreamBuilder {
            msg: Self::empty(Some(to), None, message_id),
        })
    }

    /// Starts a message to the devices subscribed to a topic `condition` (FCM), such as
    /// `'dogs' in topics && 'cats' in topics`.
    ///
    /// Errors when `condition` is empty, or on a bad `message_id` as in
    /// [`Downstream::builder`].
    pub fn builder_condition(
        condition: impl Into<String>,
        message_id: impl Into<String>,
    ) -> Result<DownstreamBuilder, UsageError> {
        let condition = condition.into();
        if condition.is_empty() {
            return Err(UsageError::InvalidField {
                field: "condition",
                reason: "empty".to_owned(),
            });
        }
        let message_id = MessageId::new(message_id)?;
        Ok(DownstreamBuilder {
            msg: Self::empty(None, Some(condition), message_id),
        })
    }

    /// Turns the message back into a builder, to change some fields.
    pub fn into_builder(self) -> DownstreamBuilder {
        DownstreamBuilder { msg: self }
    }

    /// `to`: the registration token, topic or notification key, if set.
    pub fn to(&self) -> Option<&RegistrationId> {
        self.to.as_ref()
    }

    /// `condition`: the topic condition, if set.
    pub fn condition(&self) -> Option<&str> {
        self.condition.as_deref()
    }

    /// `message_id`.
    pub fn message_id(&self) -> &MessageId {
        &self.message_id
    }

    /// `collapse_key`, if set.
    pub fn collapse_key(&self) -> Option<&str> {
        self.collapse_key.as_deref()
    }

    /// `priority`, if set.
    pub fn priority(&self) -> Option<&Priority> {
        self.priority.as_ref()
    }

    /// `content_available`, if set.
    pub fn content_available(&self) -> Option<bool> {
        self.content_available
    }

    /// `mutable_content`, if set.
    pub fn mutable_content(&self) -> Option<bool> {
        self.mutable_content
    }

    /// `time_to_live`, if set (`Some(TimeToLive::ZERO)` is not the same as `None`).
    pub fn time_to_live(&self) -> Option<TimeToLive> {
        self.time_to_live
    }

    /// `delay_while_idle`, if set.
    pub fn delay_while_idle(&self) -> Option<bool> {
        self.delay_while_idle
    }

    /// `delivery_receipt_requested`, if set.
    pub fn delivery_receipt_requested(&self) -> Option<bool> {
        self.delivery_receipt_requested
    }

    /// `dry_run`, if set.
    pub fn dry_run(&self) -> Option<bool> {
        self.dry_run
    }

    /// `data`, if set.
    pub fn data(&self) -> Option<&Map<String, Value>> {
        self.data.as_ref()
    }

    /// `notification`, if set.
    pub fn notification(&self) -> Option<&Notification> {
        self.notification.as_deref()
    }

    /// Fields this type does not know, written after the known ones. Their keys never
    /// collide with a known field name.
    pub fn extra(&self) -> &Map<String, Value> {
        &self.extra
    }

    pub(super) fn empty(
        to: Option<RegistrationId>,
        condition: Option<String>,
        message_id: MessageId,
    ) -> Self {
        Self {
            to,
            condition,
            message_id,
            collapse_key: None,
            priority: None,
            content_available: None,
            mutable_content: None,
            time_to_live: None,
            delay_while_idle: None,
            delivery_receipt_requested: None,
            dry_run: None,
            data: None,
            notification: None,
            extra: Map::new(),
        }
    }
}

/// Builds a [`Downstream`]; from [`Downstream::builder`] or [`Downstream::builder_condition`].
///
/// Each method sets one field (a second call replaces the first value). Methods that can be
/// given a value CCS cannot carry return a `Result` and leave nothing half-done.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct DownstreamBuilder {
    msg: Downstream,
}

impl DownstreamBuilder {
    /// Sets `to` (a registration token, topic or notification key); FCM allows it next to a
    /// `condition`.
    pub fn to(mut self, to: impl Into<String>) -> Result<Self, UsageError> {
        self.msg.to = Some(RegistrationId::new(to)?);
        Ok(self)
    }

    /// Sets `condition`, a topic expression (FCM).
    pub fn condition(mut self, condition: impl Into<String>) -> Self {
        self.msg.condition = Some(condition.into());
        self
    }

    /// Sets `collapse_key`: messages with the same key replace each other while waiting.
    pub fn collapse_key(mut self, key: impl Into<String>) -> Self {
        self.msg.collapse_key = Some(key.into());
        self
    }

    /// Sets `priority`.
    pub fn priority(mut self, priority: Priority) -> Self {
        self.msg.priority = Some(priority);
        self
    }

    /// Sets `content_available` (iOS: wake the app in the background).
    pub fn content_available(mut self, value: bool) -> Self {
        self.msg.content_available = Some(value);
        self
    }

    /// Sets `mutable_content` (iOS 10 and later: let a service extension change the
    /// notification).
    pub fn mutable_content(mut self, value: bool) -> Self {
        self.msg.mutable_content = Some(value);
        self
    }

    /// Sets `time_to_live` in seconds; [`UsageError::TimeToLiveOutOfRange`] above
    /// 2 419 200 (four weeks). Zero is valid and means "now or never".
    pub fn time_to_live(self, seconds: u32) -> Result<Self, UsageError> {
        Ok(self.ttl(TimeToLive::new(seconds)?))
    }

    /// Sets `time_to_live` from an already checked [`TimeToLive`].
    pub fn ttl(mut self, ttl: TimeToLive) -> Self {
        self.msg.time_to_live = Some(ttl);
        self
    }

    /// Sets `delay_while_idle` (deprecated by FCM in 2016, ignored since).
    pub fn delay_while_idle(mut self, value: bool) -> Self {
        self.msg.delay_while_idle = Some(value);
        self
    }

    /// Sets `delivery_receipt_requested`: CCS then sends a [`Receipt`](super::Receipt) when the
    /// device got the message.
    pub fn delivery_receipt_requested(mut self, value: bool) -> Self {
        self.msg.delivery_receipt_requested = Some(value);
        self
    }

    /// Sets `dry_run`: the server checks the message but does not deliver it.
    pub fn dry_run(mut self, value: bool) -> Self {
        self.msg.dry_run = Some(value);
        self
    }

    /// Sets `data` from anything that serializes to a JSON object (a `serde_json::Value`, a
    /// map, a struct). Errors with [`UsageError::InvalidField`] when it is not an object or
    /// cannot be serialized.
    ///
    /// The value is converted once, here; [`DownstreamBuilder::data_object`] takes a map
    /// without converting it.
    pub fn data(self, data: impl Serialize) -> Result<Self, UsageError> {
        match serde_json::to_value(data) {
            Ok(Value::Object(map)) => Ok(self.data_object(map)),
            Ok(other) => Err(UsageError::InvalidField {
                field: "data",
                reason: format!("must be a JSON object, not {}", describe(&other)),
            }),
            Err(e) => Err(UsageError::InvalidField {
                field: "data",
                reason: e.to_string(),
            }),
        }
    }

    /// Sets `data` to a JSON object.
    pub fn data_object(mut self, data: Map<String, Value>) -> Self {
        self.msg.data = Some(data);
        self
    }

    /// Sets `notification`.
    pub fn notification(mut self, notification: Notification) -> Self {
        self.msg.notification = Some(Box::new(notification));
        self
    }

    /// Adds a field this crate does not know (for forward compatibility). Errors with
    /// [`UsageError::InvalidField`] when `key` is the name of a known field (use its method)
    /// or `message_type`.
    pub fn extra(
        mut self,
        key: impl Into<String>,
        value: impl Into<Value>,
    ) -> Result<Self, UsageError> {
        let key = key.into();
        if DKey::lookup(&key).is_some() {
            return Err(UsageError::InvalidField {
                field: "extra",
                reason: format!("`{key}` is a known field; set it with its own method"),
            });
        }
        self.msg.extra.insert(key, value.into());
        Ok(self)
    }

    /// The message.
    pub fn build(self) -> Downstream {
        self.msg
    }
}

/// A downstream `time_to_live`: whole seconds in `0..=2_419_200` (four weeks).
///
/// Zero is a real value ("deliver now or never"), distinct from leaving the field out (which
/// means the server's default, four weeks): a message holds an `Option<TimeToLive>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimeToLive(u32);

impl TimeToLive {
    /// The largest value CCS accepts: 2 419 200 s, four weeks.
    pub const MAX: TimeToLive = TimeToLive(2_419_200);

    /// Zero seconds: deliver at once or drop.
    pub const ZERO: TimeToLive = TimeToLive(0);

    /// A time to live of `seconds`; [`UsageError::TimeToLiveOutOfRange`] above
    /// [`TimeToLive::MAX`].
    pub const fn new(seconds: u32) -> Result<Self, UsageError> {
        if seconds <= Self::MAX.0 {
            Ok(Self(seconds))
        } else {
            Err(UsageError::TimeToLiveOutOfRange {
                seconds: seconds as u64,
            })
        }
    }

    /// The value in seconds.
    pub const fn seconds(self) -> u32 {
        self.0
    }

    /// The value as a [`Duration`].
    pub const fn as_duration(self) -> Duration {
        Duration::from_secs(self.0 as u64)
    }
}

impl TryFrom<u32> for TimeToLive {
    type Error = UsageError;
    fn try_from(seconds: u32) -> Result<Self, UsageError> {
        Self::new(seconds)
    }
}

impl From<TimeToLive> for u32 {
    fn from(ttl: TimeToLive) -> u32 {
        ttl.0
    }
}

impl Serialize for TimeToLive {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

/// Strict: only a JSON integer in `0..=2_419_200` (not a string, not a float).
impl<'de> Deserialize<'de> for TimeToLive {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_u64(TtlVisitor)
    }
}

/// The downstream `priority`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Priority {
    /// `"normal"`: delivered when the device is awake (APNs priority 5).
    Normal,
    /// `"high"`: may wake a sleeping device (APNs priority 10).
    High,
    /// Any other string, kept as received (use the named variants for the known values).
    Other(String),
}

impl Priority {
    /// The JSON string.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Normal => "normal",
            Self::High => "high",
            Self::Other(s) => s,
        }
    }

    /// The priority a JSON string names; unknown strings become [`Priority::Other`].
    pub fn parse(s: &str) -> Self {
        match s {
            "normal" => Self::Normal,
            "high" => Self::High,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Priority {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Priority {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        StrSeed("priority").deserialize(d).map(|s| Self::parse(&s))
    }
}

impl Serialize for Downstream {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let len = 1
            + usize::from(self.to.is_some())
            + usize::from(self.condition.is_some())
            + usize::from(self.collapse_key.is_some())
            + usize::from(self.priority.is_some())
            + usize::from(self.content_available.is_some())
            + usize::from(self.mutable_content.is_some())
            + usize::from(self.time_to_live.is_some())
            + usize::from(self.delay_while_idle.is_some())
            + usize::from(self.delivery_receipt_requested.is_some())
            + usize::from(self.dry_run.is_some())
            + usize::from(self.data.is_some())
            + usize::from(self.notification.is_some())
            + self.extra.len();
        let mut m = s.serialize_map(Some(len))?;
        if let Some(v) = &self.to {
            m.serialize_entry("to", v)?;
        }
        if let Some(v) = &self.condition {
            m.serialize_entry("condition", v)?;
        }
        m.serialize_entry("message_id", &self.message_id)?;
        if let Some(v) = &self.collapse_key {
            m.serialize_entry("collapse_key", v)?;
        }
        if let Some(v) = &self.priority {
            m.serialize_entry("priority", v)?;
        }
        if let Some(v) = self.content_available {
            m.serialize_entry("content_available", &v)?;
        }
        if let Some(v) = self.mutable_content {
            m.serialize_entry("mutable_content", &v)?;
        }
        if let Some(v) = self.time_to_live {
            m.serialize_entry("time_to_live", &v)?;
        }
        if let Some(v) = self.delay_while_idle {
            m.serialize_entry("delay_while_idle", &v)?;
        }
        if let Some(v) = self.delivery_receipt_requested {
            m.serialize_entry("delivery_receipt_requested", &v)?;
        }
        if let Some(v) = self.dry_run {
            m.serialize_entry("dry_run", &v)?;
        }
        if let Some(v) = &self.data {
            m.serialize_entry("data", v)?;
        }
        if let Some(v) = &self.notification {
            m.serialize_entry("notification", v)?;
        }
        // The builder and the decoder both keep known names out of `extra`.
        for (k, v) in &self.extra {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

field_names!(pub(super) DKey, path prefix "" {
    To = "to",
    Condition = "condition",
    MessageId = "message_id",
    CollapseKey = "collapse_key",
    Priority = "priority",
    ContentAvailable = "content_available",
    MutableContent = "mutable_content",
    TimeToLive = "time_to_live",
    DelayWhileIdle = "delay_while_idle",
    DeliveryReceiptRequested = "delivery_receipt_requested",
    DryRun = "dry_run",
    Data = "data",
    Notification = "notification",
    MessageType = "message_type",
});

/// `time_to_live`: an integer in `0..=2_419_200`.
struct TtlVisitor;

impl Visitor<'_> for TtlVisitor {
    type Value = TimeToLive;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("`time_to_live` as an integer number of seconds in 0..=2419200")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<TimeToLive, E> {
        u32::try_from(v)
            .ok()
            .and_then(|s| TimeToLive::new(s).ok())
            .ok_or_else(|| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<TimeToLive, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    #[test]
    fn ttl_bounds() {
        assert_eq!(TimeToLive::new(0).unwrap().seconds(), 0);
        assert_eq!(TimeToLive::new(2_419_200), Ok(TimeToLive::MAX));
        assert_eq!(
            TimeToLive::new(2_419_201),
            Err(UsageError::TimeToLiveOutOfRange { seconds: 2_419_201 })
        );
        assert_eq!(
            TimeToLive::MAX.as_duration(),
            Duration::from_secs(2_419_200)
        );
        let parse = |s: &str| serde_json::from_str::<TimeToLive>(s);
        assert_eq!(parse("0").unwrap(), TimeToLive::ZERO);
        assert_eq!(parse("2419200").unwrap(), TimeToLive::MAX);
        for bad in [
            "2419201",
            "-1",
            "\"600\"",
            "600.0",
            "1e3",
            "null",
            "true",
            "4294967296",
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("time_to_live"), "{bad}: {e}");
        }
    }

    #[test]
    fn builder_refuses_bad_input() {
        let b = || Downstream::builder("REG", "m-1").unwrap();
        assert!(matches!(
            b().data(json!([1, 2])),
            Err(UsageError::InvalidField { field: "data", .. })
        ));
        assert!(b().data(json!("text")).is_err());
        assert!(b().data(json!(null)).is_err());
        assert!(
            b().data(std::collections::BTreeMap::from([("k", "v")]))
                .is_ok()
        );
        for known in [
            "to",
            "message_id",
            "data",
            "time_to_live",
            "message_type",
            "notification",
        ] {
            assert!(
                matches!(
                    b().extra(known, 1),
                    Err(UsageError::InvalidField { field: "extra", .. })
                ),
                "{known}"
            );
        }
        assert!(b().extra("restricted_package_name", "x").is_ok());
        assert!(Downstream::builder("", "m-1").is_err());
        assert!(Downstream::builder("REG", "").is_err());
        assert!(Downstream::builder_condition("", "m-1").is_err());
        assert!(b().to("").is_err());
    }

    #[test]
    fn every_dkey_is_refused_as_extra() {
        for key in DKey::ALL {
            let r = Downstream::builder("R", "m").unwrap().extra(key.name(), 1);
            assert!(r.is_err(), "{}", key.name());
        }
    }
}
