//! The downstream `notification` object.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Key, StrSeed, field_names, put};

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
