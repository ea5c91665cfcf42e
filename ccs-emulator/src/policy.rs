//! How CCS judged what an app server sent (PROTOCOL.md §4, §6): which downstream messages it
//! acked, which it nacked with which code and description, and what got a stanza error.
//!
//! The core ([`ccs_proto::server`]) parses and types the messages; this module only decides.
//! Descriptions follow CCS's form, `InvalidJson: SUBCODE : detail`.

use ccs_proto::error::JsonError;
use ccs_proto::message::{Downstream, NackCode, TimeToLive};
use serde_json::{Map, Value};

use crate::config::EmulatorConfig;

/// The answer for one downstream message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Ack it, with a canonical registration id if the config has one for its `to`; send a
    /// delivery receipt naming `receipt_to` afterwards if it asked for one.
    Ack {
        registration_id: Option<String>,
        receipt_to: Option<String>,
    },
    /// Nack it.
    Nack { code: NackCode, description: String },
}

/// The answer for a `<gcm>` payload the core could not accept as an app-server message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InvalidVerdict {
    /// It had a `message_id`: nack it.
    Nack { code: NackCode, description: String },
    /// It had none: a `bad-request` stanza error with this text.
    StanzaError { text: String },
}

/// The stanza error condition CCS used for payloads it could not take at all.
pub(crate) const STANZA_ERROR_CONDITION: &str = "bad-request";

/// Judges a downstream message the core decoded (types already right).
pub(crate) fn judge(msg: &Downstream, config: &EmulatorConfig) -> Verdict {
    let invalid = |description: String| Verdict::Nack {
        code: NackCode::InvalidJson,
        description,
    };
    let to = msg.to().map(|t| t.as_str());
    if to.is_none() && msg.condition().is_none() {
        return invalid("InvalidJson: JSON_PARSING_ERROR : Missing Required Field: to".to_owned());
    }
    if let Some(data) = msg.data() {
        if let Some(key) = data.keys().find(|k| is_reserved_key(k)) {
            return invalid(format!(
                "InvalidJson: INVALID_DATA_KEY : Invalid Data Key: {key} (\"from\" and keys \
                 starting with \"google\" are reserved)"
            ));
        }
        let size = data_size(data);
        // PROTOCOL.md §4 "Size limits": 4096 bytes, 2048 for topic messages.
        let to_topic = msg.condition().is_some() || to.is_some_and(|t| t.starts_with("/topics/"));
        let (limit, kind) = if to_topic {
            (config.max_topic_data_bytes, " for a topic message")
        } else {
            (config.max_data_bytes, "")
        };
        if size > limit {
            return invalid(format!(
                "InvalidJson: MESSAGE_TOO_BIG : Message too big: data is {size} bytes (keys \
                 and values), the limit{kind} is {limit}"
            ));
        }
    }
    if let Some(to) = to {
        // An empty token is not a token: nacked as CCS nacked invalid ones (PROTOCOL.md
        // §3.5, 2014 form: BAD_REGISTRATION, "Invalid token on 'to' field: ...").
        if to.is_empty() || config.bad_registrations.contains(to) {
            return Verdict::Nack {
                code: NackCode::BadRegistration,
                description: format!("Invalid token on 'to' field: {to}"),
            };
        }
        if config.unregistered.contains(to) {
            return Verdict::Nack {
                code: NackCode::DeviceUnregistered,
                description: format!("Device unregistered: {to}"),
            };
        }
    }
    let registration_id = to.and_then(|t| config.canonical.get(t)).cloned();
    let wants_receipt =
        msg.delivery_receipt_requested() == Some(true) && msg.dry_run() != Some(true);
    let receipt_to = if wants_receipt {
        registration_id.clone().or_else(|| to.map(str::to_owned))
    } else {
        None
    };
    Verdict::Ack {
        registration_id,
        receipt_to,
    }
}

/// Judges a payload the core refused (`ServerEvent::InvalidPayload`): `has_id` says whether
/// the core found a string `message_id` (and made it pending).
pub(crate) fn judge_invalid(json: &str, error: &JsonError, has_id: bool) -> InvalidVerdict {
    let obj = match serde_json::from_str::<Value>(json) {
        Ok(Value::Object(obj)) => obj,
        Ok(_) => {
            return parsing_error(
                has_id,
                "Unparseable JSON: the payload is not a JSON object".to_owned(),
            );
        }
        Err(e) => return parsing_error(has_id, format!("Unparseable JSON: {e}")),
    };
    if !has_id {
        let text = match obj.get("message_id") {
            None => "InvalidJson: JSON_PARSING_ERROR : Missing Required Field: message_id".into(),
            Some(v) => type_error("message_id", "java.lang.String", v),
        };
        return InvalidVerdict::StanzaError { text };
    }
    if obj.get("message_type").and_then(Value::as_str) == Some("ack") {
        return InvalidVerdict::Nack {
            code: NackCode::BadAck,
            description: format!("Invalid ack: {}", ack_problem(&obj, error)),
        };
    }
    let description = field_problem(&obj)
        .unwrap_or_else(|| format!("InvalidJson: JSON_PARSING_ERROR : {}", error.detail));
    InvalidVerdict::Nack {
        code: NackCode::InvalidJson,
        description,
    }
}

/// The string `field` of a JSON object text, if it is one and has it.
pub(crate) fn string_field(json: &str, field: &str) -> Option<String> {
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Object(mut obj)) => match obj.remove(field) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        },
        _ => None,
    }
}

/// A reserved `data` key (PROTOCOL.md §4): `from`, or anything starting with `google`.
fn is_reserved_key(key: &str) -> bool {
    key == "from" || key.starts_with("google")
}

/// The size CCS limited: keys plus values, strings by their UTF-8 length, other values by
/// their JSON text.
fn data_size(data: &Map<String, Value>) -> usize {
    data.iter()
        .map(|(k, v)| {
            k.len()
                + match v {
                    Value::String(s) => s.len(),
                    other => other.to_string().len(),
                }
        })
        .sum()
}

fn parsing_error(has_id: bool, detail: String) -> InvalidVerdict {
    let text = format!("InvalidJson: JSON_PARSING_ERROR : {detail}");
    if has_id {
        InvalidVerdict::Nack {
            code: NackCode::InvalidJson,
            description: text,
        }
    } else {
        InvalidVerdict::StanzaError { text }
    }
}

/// The expected JSON type of each downstream field, in CCS's (Java) words.
const FIELD_TYPES: &[(&str, Expect)] = &[
    ("to", Expect::String),
    ("condition", Expect::String),
    ("collapse_key", Expect::String),
    ("priority", Expect::String),
    ("message_type", Expect::String),
    ("time_to_live", Expect::Ttl),
    ("content_available", Expect::Boolean),
    ("mutable_content", Expect::Boolean),
    ("delay_while_idle", Expect::Boolean),
    ("delivery_receipt_requested", Expect::Boolean),
    ("dry_run", Expect::Boolean),
    ("data", Expect::Object),
    ("notification", Expect::Object),
];

#[derive(Debug, Clone, Copy)]
enum Expect {
    String,
    Boolean,
    Object,
    Ttl,
}

/// The first field with a wrong type or value, as CCS described it.
fn field_problem(obj: &Map<String, Value>) -> Option<String> {
    for &(name, expect) in FIELD_TYPES {
        let Some(v) = obj.get(name) else { continue };
        let problem = match expect {
            Expect::String if !v.is_string() => Some(type_error(name, "java.lang.String", v)),
            Expect::Boolean if !v.is_boolean() => Some(type_error(name, "java.lang.Boolean", v)),
            Expect::Object if !v.is_object() => Some(type_error(name, "org.json.JSONObject", v)),
            Expect::Ttl => ttl_problem(v),
            _ => None,
        };
        if problem.is_some() {
            return problem;
        }
    }
    if let Some(Value::Object(n)) = obj.get("notification") {
        return notification_problem(n);
    }
    None
}

fn ttl_problem(v: &Value) -> Option<String> {
    let Value::Number(n) = v else {
        return Some(type_error("time_to_live", "java.lang.Number", v));
    };
    let max = TimeToLive::MAX.seconds();
    let in_range = n.as_u64().is_some_and(|s| s <= u64::from(max));
    (!in_range).then(|| {
        format!(
            "InvalidJson: INVALID_TTL : Invalid value ({n}) for \"time_to_live\": must be \
             between 0 and \"{max}\""
        )
    })
}

fn notification_problem(n: &Map<String, Value>) -> Option<String> {
    for (key, v) in n {
        let path = format!("notification.{key}");
        let arrays = matches!(key.as_str(), "body_loc_args" | "title_loc_args");
        if arrays {
            let ok = v.as_array().is_some_and(|a| a.iter().all(Value::is_string));
            if !ok {
                return Some(type_error(&path, "org.json.JSONArray of strings", v));
            }
        } else if KNOWN_NOTIFICATION_STRINGS.contains(&key.as_str()) && !v.is_string() {
            return Some(type_error(&path, "java.lang.String", v));
        }
    }
    None
}

const KNOWN_NOTIFICATION_STRINGS: &[&str] = &[
    "title",
    "body",
    "icon",
    "sound",
    "badge",
    "tag",
    "color",
    "click_action",
    "body_loc_key",
    "title_loc_key",
    "android_channel_id",
];

/// `InvalidJson: JSON_TYPE_ERROR : Field "time_to_live" must be a JSON java.lang.Number: abc`
/// (CCS's 2014 example; a string value is shown without its quotes).
fn type_error(field: &str, java_type: &str, v: &Value) -> String {
    let shown = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    format!("InvalidJson: JSON_TYPE_ERROR : Field \"{field}\" must be a JSON {java_type}: {shown}")
}

fn ack_problem(obj: &Map<String, Value>, error: &JsonError) -> String {
    match obj.get("to") {
        None => "Missing Required Field: to".to_owned(),
        Some(v) if !v.is_string() => type_error("to", "java.lang.String", v),
        Some(_) => error.detail.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ccs_proto::message::ClientMessage;

    fn downstream(json: &str) -> Downstream {
        match ClientMessage::from_json(json) {
            Ok(ClientMessage::Downstream(d)) => d,
            other => panic!("not a downstream message: {other:?}"),
        }
    }

    fn invalid(json: &str) -> InvalidVerdict {
        let err = ClientMessage::from_json(json).expect_err("should be invalid");
        let has_id = matches!(
            serde_json::from_str::<Value>(json),
            Ok(Value::Object(o)) if o.get("message_id").is_some_and(Value::is_string)
        );
        judge_invalid(json, &err, has_id)
    }

    fn nack_of(v: Verdict) -> (NackCode, String) {
        match v {
            Verdict::Nack { code, description } => (code, description),
            other => panic!("expected a nack, got {other:?}"),
        }
    }

    #[test]
    fn plain_message_is_acked() {
        let c = EmulatorConfig::default();
        let v = judge(&downstream(r#"{"to":"t","message_id":"m"}"#), &c);
        assert_eq!(
            v,
            Verdict::Ack {
                registration_id: None,
                receipt_to: None
            }
        );
    }

    #[test]
    fn canonical_and_receipt() {
        let mut c = EmulatorConfig::default();
        c.canonical.insert("old".into(), "new".into());
        let v = judge(
            &downstream(r#"{"to":"old","message_id":"m","delivery_receipt_requested":true}"#),
            &c,
        );
        assert_eq!(
            v,
            Verdict::Ack {
                registration_id: Some("new".into()),
                receipt_to: Some("new".into())
            }
        );
        let v = judge(
            &downstream(
                r#"{"to":"t","message_id":"m","delivery_receipt_requested":true,"dry_run":true}"#,
            ),
            &c,
        );
        assert!(matches!(
            v,
            Verdict::Ack {
                receipt_to: None,
                ..
            }
        ));
    }

    #[test]
    fn missing_to_without_condition() {
        let c = EmulatorConfig::default();
        let (code, d) = nack_of(judge(&downstream(r#"{"message_id":"m"}"#), &c));
        assert_eq!(code, NackCode::InvalidJson);
        assert!(d.contains("Missing Required Field: to"), "{d}");
        let v = judge(
            &downstream(r#"{"message_id":"m","condition":"'a' in topics"}"#),
            &c,
        );
        assert!(matches!(v, Verdict::Ack { .. }));
    }

    #[test]
    fn data_limits_and_reserved_keys() {
        let c = EmulatorConfig::default();
        let big = "x".repeat(4096);
        let (code, d) = nack_of(judge(
            &downstream(&format!(
                r#"{{"to":"t","message_id":"m","data":{{"k":"{big}"}}}}"#
            )),
            &c,
        ));
        assert_eq!(code, NackCode::InvalidJson);
        assert!(d.contains("Message too big"), "{d}");
        // Exactly at the limit: 1 + 4095.
        let fits = "x".repeat(4095);
        let v = judge(
            &downstream(&format!(
                r#"{{"to":"t","message_id":"m","data":{{"k":"{fits}"}}}}"#
            )),
            &c,
        );
        assert!(matches!(v, Verdict::Ack { .. }));
        for key in ["from", "google.x", "googleplay"] {
            let (code, d) = nack_of(judge(
                &downstream(&format!(
                    r#"{{"to":"t","message_id":"m","data":{{"{key}":"v"}}}}"#
                )),
                &c,
            ));
            assert_eq!(code, NackCode::InvalidJson);
            assert!(d.contains("Invalid Data Key"), "{d}");
        }
    }

    #[test]
    fn token_sets() {
        let mut c = EmulatorConfig::default();
        c.unregistered.insert("gone".into());
        c.bad_registrations.insert("bad".into());
        let (code, _) = nack_of(judge(&downstream(r#"{"to":"gone","message_id":"m"}"#), &c));
        assert_eq!(code, NackCode::DeviceUnregistered);
        let (code, d) = nack_of(judge(&downstream(r#"{"to":"bad","message_id":"m"}"#), &c));
        assert_eq!(code, NackCode::BadRegistration);
        assert_eq!(d, "Invalid token on 'to' field: bad");
    }

    #[test]
    fn ttl_problems() {
        let v = invalid(r#"{"to":"t","message_id":"m","time_to_live":"abc"}"#);
        assert_eq!(
            v,
            InvalidVerdict::Nack {
                code: NackCode::InvalidJson,
                description: "InvalidJson: JSON_TYPE_ERROR : Field \"time_to_live\" must be a \
                              JSON java.lang.Number: abc"
                    .into()
            }
        );
        for ttl in ["-1", "2419201", "1.5"] {
            let v = invalid(&format!(
                r#"{{"to":"t","message_id":"m","time_to_live":{ttl}}}"#
            ));
            let InvalidVerdict::Nack { code, description } = v else {
                panic!("{v:?}")
            };
            assert_eq!(code, NackCode::InvalidJson);
            assert!(
                description.starts_with("InvalidJson: INVALID_TTL : Invalid value ("),
                "{description}"
            );
            assert!(description.contains(ttl), "{description}");
        }
    }

    #[test]
    fn type_errors_name_the_field() {
        for (field, value, java) in [
            ("delay_while_idle", "\"yes\"", "java.lang.Boolean"),
            ("to", "5", "java.lang.String"),
            ("data", "[1]", "org.json.JSONObject"),
            ("priority", "10", "java.lang.String"),
        ] {
            let v = invalid(&format!(r#"{{"message_id":"m","{field}":{value}}}"#));
            let InvalidVerdict::Nack { code, description } = v else {
                panic!("{v:?}")
            };
            assert_eq!(code, NackCode::InvalidJson);
            assert!(
                description.starts_with(&format!(
                    "InvalidJson: JSON_TYPE_ERROR : Field \"{field}\" must be a JSON {java}"
                )),
                "{description}"
            );
        }
        let v = invalid(r#"{"to":"t","message_id":"m","notification":{"title":1}}"#);
        assert!(
            matches!(&v, InvalidVerdict::Nack { description, .. } if description.contains("notification.title")),
            "{v:?}"
        );
    }

    #[test]
    fn missing_message_id_is_a_stanza_error() {
        assert_eq!(
            invalid(r#"{"to":"t"}"#),
            InvalidVerdict::StanzaError {
                text: "InvalidJson: JSON_PARSING_ERROR : Missing Required Field: message_id".into()
            }
        );
        assert!(matches!(
            invalid("not json"),
            InvalidVerdict::StanzaError { text } if text.starts_with("InvalidJson: JSON_PARSING_ERROR")
        ));
        assert!(matches!(
            invalid(r#"{"to":"t","message_id":7}"#),
            InvalidVerdict::StanzaError { text } if text.contains("JSON_TYPE_ERROR")
        ));
    }

    #[test]
    fn bad_ack_and_odd_message_types() {
        let v = invalid(r#"{"message_id":"m","message_type":"ack"}"#);
        assert!(
            matches!(&v, InvalidVerdict::Nack { code: NackCode::BadAck, description } if description.contains("to")),
            "{v:?}"
        );
        let v = invalid(r#"{"to":"t","message_id":"m","message_type":"nack"}"#);
        assert!(matches!(
            v,
            InvalidVerdict::Nack {
                code: NackCode::InvalidJson,
                ..
            }
        ));
    }
}
