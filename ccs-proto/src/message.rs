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
//! that does not decode is a [`JsonError`]; without a usable `from` and `message_id` there is
//! nothing to ack anyway.
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

use std::borrow::Borrow;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{JsonError, UsageError};

// ---------------------------------------------------------------------------------------------
// Identifiers
// ---------------------------------------------------------------------------------------------

macro_rules! string_newtype {
    ($name:ident, $what:literal) => {
        impl $name {
            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id as an owned `String`.
            pub fn into_string(self) -> String {
                self.0
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
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
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
                StrSeed($what).deserialize(d).map(Self)
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
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(String);

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
        Ok(Self(id))
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
pub struct RegistrationId(String);

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

// ---------------------------------------------------------------------------------------------
// Field types
// ---------------------------------------------------------------------------------------------

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

/// The downstream `notification` object (FCM and late GCM): what the device shows.
///
/// Every field is optional and left out of the JSON when `None`. Fields this type does not
/// know go in `extra` and are written after the known ones; an `extra` entry whose key is one
/// of the known field names is not written (set the field instead).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Notification {
    /// `title`: the notification's title.
    pub title: Option<String>,
    /// `body`: the notification's text.
    pub body: Option<String>,
    /// `icon` (Android): a drawable resource name.
    pub icon: Option<String>,
    /// `sound`: a sound to play (`"default"` or a resource name).
    pub sound: Option<String>,
    /// `badge` (iOS): the value of the app icon's badge.
    pub badge: Option<String>,
    /// `tag` (Android): notifications with the same tag replace each other.
    pub tag: Option<String>,
    /// `color` (Android): icon colour as `#rrggbb`.
    pub color: Option<String>,
    /// `click_action`: the action (Android intent filter, iOS category) run on a tap.
    pub click_action: Option<String>,
    /// `body_loc_key`: key of a localized body string in the app's resources.
    pub body_loc_key: Option<String>,
    /// `body_loc_args`: format arguments for `body_loc_key` (a JSON array of strings).
    pub body_loc_args: Option<Vec<String>>,
    /// `title_loc_key`: key of a localized title string in the app's resources.
    pub title_loc_key: Option<String>,
    /// `title_loc_args`: format arguments for `title_loc_key` (a JSON array of strings).
    pub title_loc_args: Option<Vec<String>>,
    /// `android_channel_id` (Android O and later): the notification channel.
    pub android_channel_id: Option<String>,
    /// Any other field, written as given.
    pub extra: Map<String, Value>,
}

// ---------------------------------------------------------------------------------------------
// Downstream
// ---------------------------------------------------------------------------------------------

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
    to: Option<RegistrationId>,
    condition: Option<String>,
    message_id: MessageId,
    collapse_key: Option<String>,
    priority: Option<Priority>,
    content_available: Option<bool>,
    mutable_content: Option<bool>,
    time_to_live: Option<TimeToLive>,
    delay_while_idle: Option<bool>,
    delivery_receipt_requested: Option<bool>,
    dry_run: Option<bool>,
    data: Option<Map<String, Value>>,
    // Boxed: most messages have none, and a `Downstream` is moved through queues.
    notification: Option<Box<Notification>>,
    extra: Map<String, Value>,
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

    fn empty(to: Option<RegistrationId>, condition: Option<String>, message_id: MessageId) -> Self {
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

    /// Sets `delivery_receipt_requested`: CCS then sends a [`Receipt`] when the device got
    /// the message.
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

// ---------------------------------------------------------------------------------------------
// What the app server sends besides downstream messages
// ---------------------------------------------------------------------------------------------

/// The ack an app server sends for an upstream message or a receipt:
/// `{"to":…,"message_id":…,"message_type":"ack"}`.
///
/// `to` is the `from` of the message being acked (`gcm.googleapis.com` for a receipt) and
/// `message_id` is its id verbatim (a receipt's keeps its `dr2:` prefix). Get one from
/// [`Incoming::ack_for`]. When decoded (server role), fields other than these three are
/// ignored.
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

// ---------------------------------------------------------------------------------------------
// Incoming (CCS -> app server)
// ---------------------------------------------------------------------------------------------

/// A message from CCS to the app server, decoded by [`Incoming::from_json`].
///
/// Dispatch is on the JSON `message_type` only (never on stanza attributes): absent =
/// [`Incoming::Upstream`], `"ack"`, `"nack"`, `"receipt"`, `"control"`, and any other value
/// is [`Incoming::Unknown`], kept whole. Fields a variant does not know go in its `extra`, and
/// so does a known optional field whose value has the wrong type (see the
/// [module documentation](self#leniency-what-ccs-sends)): an upstream message or a receipt
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
    /// Decodes the JSON text of one `<gcm>` element from CCS.
    ///
    /// Errors when the text is not one JSON object, when a required field is missing or not a
    /// string (`message_id` on everything but control and unknown messages, `from` on
    /// upstream messages and receipts, `control_type` on control messages), or when
    /// `message_type` is neither a string nor null; the error names the field. An optional
    /// field of the wrong type is no error: it is kept in `extra` (the rules are in the
    /// [module documentation](self#leniency-what-ccs-sends)).
    ///
    /// The text is decoded in one pass without building a `serde_json::Value`. Only when that
    /// fails (a field given twice, or an error) is it parsed again as a `Value`, in which each
    /// name keeps its last value; that second decoding is used if it gives an upstream message
    /// or a receipt, and otherwise the first error is returned.
    pub fn from_json(json: &str) -> Result<Self, JsonError> {
        match serde_json::from_str(json) {
            Ok(m) => Ok(m),
            Err(e) => Self::ackable_last_values(json).ok_or_else(|| e.into()),
        }
    }

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
            message_id: MessageId(format!("dr2:{}", original_message_id.as_str())),
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

// ---------------------------------------------------------------------------------------------
// Nack codes
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Serialization
// ---------------------------------------------------------------------------------------------

impl Serialize for Notification {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        let strings = [
            (NKey::Title, &self.title),
            (NKey::Body, &self.body),
            (NKey::Icon, &self.icon),
            (NKey::Sound, &self.sound),
            (NKey::Badge, &self.badge),
            (NKey::Tag, &self.tag),
            (NKey::Color, &self.color),
            (NKey::ClickAction, &self.click_action),
            (NKey::BodyLocKey, &self.body_loc_key),
        ];
        for (key, value) in strings {
            if let Some(v) = value {
                m.serialize_entry(key.name(), v)?;
            }
        }
        if let Some(v) = &self.body_loc_args {
            m.serialize_entry(NKey::BodyLocArgs.name(), v)?;
        }
        if let Some(v) = &self.title_loc_key {
            m.serialize_entry(NKey::TitleLocKey.name(), v)?;
        }
        if let Some(v) = &self.title_loc_args {
            m.serialize_entry(NKey::TitleLocArgs.name(), v)?;
        }
        if let Some(v) = &self.android_channel_id {
            m.serialize_entry(NKey::AndroidChannelId.name(), v)?;
        }
        for (k, v) in &self.extra {
            if NKey::lookup(k).is_none() {
                m.serialize_entry(k, v)?;
            }
        }
        m.end()
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

/// Whether a nack code is the one an absent `error` decodes to.
fn is_empty_unknown(code: &NackCode) -> bool {
    matches!(code, NackCode::Unknown(s) if s.is_empty())
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

// ---------------------------------------------------------------------------------------------
// Deserialization: field names
// ---------------------------------------------------------------------------------------------

/// Declares the known field names of one JSON object as a fieldless enum.
macro_rules! field_names {
    ($name:ident, path prefix $prefix:literal { $($variant:ident = $json:literal,)* }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum $name {
            $($variant,)*
        }

        impl $name {
            // Every name in declaration order (not every list needs it outside tests).
            #[allow(dead_code)]
            const ALL: &'static [$name] = &[$($name::$variant,)*];

            fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $json,)*
                }
            }

            fn lookup(s: &str) -> Option<Self> {
                match s {
                    $($json => Some($name::$variant),)*
                    _ => None,
                }
            }

            /// The name with its parent object's, for error messages (`notification.title`).
            #[allow(dead_code)]
            fn path(self) -> &'static str {
                match self {
                    $($name::$variant => concat!($prefix, $json),)*
                }
            }
        }

        impl FieldName for $name {
            fn lookup(s: &str) -> Option<Self> {
                $name::lookup(s)
            }
        }
    };
}

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

field_names!(DKey, path prefix "" {
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

field_names!(NKey, path prefix "notification." {
    Title = "title",
    Body = "body",
    Icon = "icon",
    Sound = "sound",
    Badge = "badge",
    Tag = "tag",
    Color = "color",
    ClickAction = "click_action",
    BodyLocKey = "body_loc_key",
    BodyLocArgs = "body_loc_args",
    TitleLocKey = "title_loc_key",
    TitleLocArgs = "title_loc_args",
    AndroidChannelId = "android_channel_id",
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

// ---------------------------------------------------------------------------------------------
// Deserialization: strictly typed fields (what app servers send)
// ---------------------------------------------------------------------------------------------

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

/// An array of strings.
struct StrVecSeed(&'static str);

impl<'de> DeserializeSeed<'de> for StrVecSeed {
    type Value = Vec<String>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<String>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for StrVecSeed {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` as an array of strings", self.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(s) = seq.next_element_seed(StrSeed(self.0))? {
            out.push(s);
        }
        Ok(out)
    }
}

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

fn collect_map<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Map<String, Value>, A::Error> {
    let mut out = Map::new();
    while let Some((k, v)) = map.next_entry::<String, Value>()? {
        out.insert(k, v);
    }
    Ok(out)
}

impl<'de> Deserialize<'de> for Notification {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(NotificationVisitor)
    }
}

struct NotificationVisitor;

impl<'de> Visitor<'de> for NotificationVisitor {
    type Value = Notification;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("`notification` as a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Notification, A::Error> {
        let mut n = Notification::default();
        while let Some(key) = map.next_key::<Key<NKey>>()? {
            let key = match key {
                Key::Known(k) => k,
                Key::Other(name) => {
                    let v: Value = map.next_value()?;
                    n.extra.insert(name, v);
                    continue;
                }
            };
            let path = key.path();
            let slot = match key {
                NKey::BodyLocArgs | NKey::TitleLocArgs => {
                    let slot = if key == NKey::BodyLocArgs {
                        &mut n.body_loc_args
                    } else {
                        &mut n.title_loc_args
                    };
                    let v = map.next_value_seed(StrVecSeed(path))?;
                    put(slot, path, v)?;
                    continue;
                }
                NKey::Title => &mut n.title,
                NKey::Body => &mut n.body,
                NKey::Icon => &mut n.icon,
                NKey::Sound => &mut n.sound,
                NKey::Badge => &mut n.badge,
                NKey::Tag => &mut n.tag,
                NKey::Color => &mut n.color,
                NKey::ClickAction => &mut n.click_action,
                NKey::BodyLocKey => &mut n.body_loc_key,
                NKey::TitleLocKey => &mut n.title_loc_key,
                NKey::AndroidChannelId => &mut n.android_channel_id,
            };
            let v = map.next_value_seed(StrSeed(path))?;
            put(slot, path, v)?;
        }
        Ok(n)
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
        let mut msg = Downstream::empty(None, None, MessageId(String::new()));
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
                .ok_or_else(|| E::missing_field("message_id"))?,
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
                    .ok_or_else(|| E::missing_field("message_id"))?,
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

// ---------------------------------------------------------------------------------------------
// Deserialization: incoming messages
// ---------------------------------------------------------------------------------------------

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
            let message_id = MessageId(self.required_str(IKey::MessageId)?);
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
                let message_id = MessageId(self.required_str(IKey::MessageId)?);
                Incoming::Ack(Ack {
                    from: self.lenient_str(IKey::From),
                    message_id,
                    registration_id: self.lenient_str(IKey::RegistrationId),
                    extra: self.rest(),
                })
            }
            Kind::Nack => {
                let message_id = MessageId(self.required_str(IKey::MessageId)?);
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
                let message_id = MessageId(self.required_str(IKey::MessageId)?);
                let data = self.lenient_object(IKey::Data);
                Incoming::Receipt(Receipt {
                    from,
                    message_id,
                    category: self.lenient_str(IKey::Category),
                    status: receipt_status_of(data.get("message_status")),
                    original_message_id: data_str_of(data.get("original_message_id"))
                        .map(|s| MessageId(s.to_owned())),
                    device_registration_id: data_str_of(data.get("device_registration_id"))
                        .map(str::to_owned),
                    sent_timestamp: data.get("message_sent_timestamp").and_then(timestamp_of),
                    data,
                    extra: self.rest(),
                })
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

/// A string of ASCII digits as a `u64` (no sign, no spaces, not empty, within range).
fn digits_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
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

/// A receipt's `message_sent_timestamp`: a string of ASCII digits or a non-negative JSON
/// integer, within `u64`; `None` for anything else.
fn timestamp_of(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => digits_u64(s),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

fn wrong_type<E: de::Error>(field: &str, found: &str, expected: &str) -> E {
    E::custom(format_args!(
        "invalid type for `{field}`: {found}, expected {expected}"
    ))
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
    fn nack_serializes_raw_error_only_when_it_agrees() {
        let mut n = Nack::new(MessageId::new("m").unwrap(), NackCode::InvalidTtl);
        n.raw_error = "InvalidJson : INVALID_TTL : bad".into();
        let v: Value = serde_json::to_value(&n).unwrap();
        assert_eq!(v["error"], "InvalidJson : INVALID_TTL : bad");
        n.error = NackCode::BadAck;
        let v: Value = serde_json::to_value(&n).unwrap();
        assert_eq!(v["error"], "BAD_ACK");
    }

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
