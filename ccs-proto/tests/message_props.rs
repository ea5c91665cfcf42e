//! Property tests for `ccs_proto::message`: every kind of message survives
//! serialize -> parse unchanged, with hostile strings everywhere; no input panics the
//! decoders; id validation accepts exactly what XML 1.0 can carry.

use ccs_proto::message::{
    Ack, AppAck, ClientMessage, Control, ControlType, Downstream, Incoming, MessageId, Nack,
    NackCode, Notification, Priority, Receipt, ReceiptStatus, Upstream,
};
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Strings built from pieces that break naive XML or JSON handling.
fn hostile() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("<".to_owned()),
        Just("&".to_owned()),
        Just("]]>".to_owned()),
        Just("\"".to_owned()),
        Just("'".to_owned()),
        Just("\\".to_owned()),
        Just("</gcm></message>".to_owned()),
        Just("&amp;&#0;".to_owned()),
        Just("\u{0}".to_owned()),
        Just("\u{1b}".to_owned()),
        Just("\t\n\r".to_owned()),
        Just("🎉".to_owned()),
        Just("𝄞".to_owned()),
        Just("\u{fffe}\u{ffff}".to_owned()),
        Just("\u{2028}\u{2029}".to_owned()),
        Just("dr2:".to_owned()),
        Just(" : ".to_owned()),
        "[a-zA-Z0-9 _-]{0,8}",
        any::<char>().prop_map(String::from),
    ];
    vec(piece, 0..6).prop_map(|v| v.concat())
}

fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{fffe}' && c != '\u{ffff}')
}

/// A string `MessageId::new` accepts.
fn legal_id() -> impl Strategy<Value = String> {
    hostile().prop_map(|s| {
        let mut s: String = s.chars().filter(|&c| xml_char(c)).collect();
        if s.is_empty() {
            s.push('x');
        }
        s
    })
}

/// Any string, as an id received from the peer (not validated).
fn peer_id() -> impl Strategy<Value = MessageId> {
    hostile().prop_map(|s| serde_json::from_value(Value::String(s)).unwrap())
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Exactly representable floats (serde_json's default float parsing is not always
        // exact to the last bit for arbitrary ones).
        (-4000i32..4000).prop_map(|i| Value::from(f64::from(i) / 8.0)),
        hostile().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            btree_map(hostile(), inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn object() -> impl Strategy<Value = Map<String, Value>> {
    btree_map(hostile(), json_value(), 0..4).prop_map(|m| m.into_iter().collect())
}

/// An object whose keys avoid `reserved`.
fn extra_avoiding(reserved: &'static [&'static str]) -> impl Strategy<Value = Map<String, Value>> {
    object().prop_map(move |mut m| {
        m.retain(|k, _| !reserved.contains(&k.as_str()));
        m
    })
}

const DOWNSTREAM_FIELDS: &[&str] = &[
    "to",
    "condition",
    "message_id",
    "collapse_key",
    "priority",
    "content_available",
    "mutable_content",
    "time_to_live",
    "delay_while_idle",
    "delivery_receipt_requested",
    "dry_run",
    "data",
    "notification",
    "message_type",
];

const NOTIFICATION_FIELDS: &[&str] = &[
    "title",
    "body",
    "icon",
    "sound",
    "badge",
    "tag",
    "color",
    "click_action",
    "body_loc_key",
    "body_loc_args",
    "title_loc_key",
    "title_loc_args",
    "android_channel_id",
];

fn priority() -> impl Strategy<Value = Priority> {
    prop_oneof![
        Just(Priority::Normal),
        Just(Priority::High),
        hostile()
            .prop_filter("not a named priority", |s| s != "normal" && s != "high")
            .prop_map(Priority::Other),
    ]
}

fn notification() -> impl Strategy<Value = Notification> {
    let s = || option::of(hostile());
    let args = || option::of(vec(hostile(), 0..3));
    (
        (s(), s(), s(), s(), s(), s(), s()),
        (s(), s(), args(), s(), args(), s()),
        extra_avoiding(NOTIFICATION_FIELDS),
    )
        .prop_map(
            |(
                (title, body, icon, sound, badge, tag, color),
                (click_action, body_loc_key, body_loc_args, title_loc_key, title_loc_args, channel),
                extra,
            )| Notification {
                title,
                body,
                icon,
                sound,
                badge,
                tag,
                color,
                click_action,
                body_loc_key,
                body_loc_args,
                title_loc_key,
                title_loc_args,
                android_channel_id: channel,
                extra,
            },
        )
}

/// A downstream message with every field set.
fn full_downstream() -> impl Strategy<Value = Downstream> {
    (
        (legal_id(), legal_id(), hostile(), hostile(), priority()),
        any::<[bool; 5]>(),
        0u32..=2_419_200,
        object(),
        notification(),
        extra_avoiding(DOWNSTREAM_FIELDS),
    )
        .prop_map(
            |((to, id, condition, collapse, prio), b, ttl, data, n, extra)| {
                let mut builder = Downstream::builder(to, id)
                    .unwrap()
                    .condition(condition)
                    .collapse_key(collapse)
                    .priority(prio)
                    .content_available(b[0])
                    .mutable_content(b[1])
                    .time_to_live(ttl)
                    .unwrap()
                    .delay_while_idle(b[2])
                    .delivery_receipt_requested(b[3])
                    .dry_run(b[4])
                    .data_object(data)
                    .notification(n);
                for (k, v) in extra {
                    builder = builder.extra(k, v).unwrap();
                }
                builder.build()
            },
        )
}

fn upstream() -> impl Strategy<Value = Upstream> {
    (
        hostile(),
        option::of(hostile()),
        peer_id(),
        object(),
        option::of(any::<u64>()),
        extra_avoiding(&[
            "from",
            "category",
            "message_id",
            "data",
            "time_to_live",
            "message_type",
        ]),
    )
        .prop_map(
            |(from, category, message_id, data, time_to_live, extra)| Upstream {
                from,
                category,
                message_id,
                data,
                time_to_live,
                extra,
            },
        )
}

fn ack() -> impl Strategy<Value = Ack> {
    (
        option::of(hostile()),
        peer_id(),
        option::of(hostile()),
        extra_avoiding(&["from", "message_id", "registration_id", "message_type"]),
    )
        .prop_map(|(from, message_id, registration_id, extra)| Ack {
            from,
            message_id,
            registration_id,
            extra,
        })
}

fn raw_error() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("BAD_REGISTRATION".to_owned()),
        Just("SERVICE_UNAVAILABLE".to_owned()),
        Just("CONNECTION_DRAINING".to_owned()),
        Just(
            "InvalidJson : INVALID_TTL : Invalid value (-1) for \"time_to_live\": must be between 0 and \"2419200\"\n"
                .to_owned()
        ),
        hostile().prop_map(|s| format!("InvalidJson : {s}")),
        hostile(),
    ]
}

fn nack() -> impl Strategy<Value = Nack> {
    (
        option::of(hostile()),
        peer_id(),
        raw_error(),
        option::of(hostile()),
        extra_avoiding(&[
            "from",
            "message_id",
            "error",
            "error_description",
            "message_type",
        ]),
    )
        .prop_map(
            |(from, message_id, raw_error, error_description, extra)| Nack {
                from,
                message_id,
                error: NackCode::parse(&raw_error),
                raw_error,
                error_description,
                extra,
            },
        )
}

fn receipt() -> impl Strategy<Value = Receipt> {
    (
        legal_id(),
        hostile(),
        any::<u64>(),
        option::of(hostile()),
        extra_avoiding(&["from", "message_id", "category", "data", "message_type"]),
        extra_avoiding(&[
            "message_status",
            "original_message_id",
            "device_registration_id",
            "message_sent_timestamp",
        ]),
        any::<bool>(),
    )
        .prop_map(|(id, device, ts, category, extra, more_data, numeric_ts)| {
            let mut r = Receipt::sent_to_device(&MessageId::new(id).unwrap(), device, ts);
            r.category = category;
            r.extra = extra;
            r.data.extend(more_data);
            if numeric_ts {
                r.data
                    .insert("message_sent_timestamp".into(), Value::from(ts));
            }
            r
        })
}

fn control() -> impl Strategy<Value = Control> {
    (
        prop_oneof![
            Just(ControlType::ConnectionDraining),
            hostile()
                .prop_filter("unknown", |s| s != "CONNECTION_DRAINING")
                .prop_map(ControlType::Unknown),
        ],
        extra_avoiding(&["control_type", "message_type"]),
    )
        .prop_map(|(control_type, extra)| Control {
            control_type,
            extra,
        })
}

fn incoming() -> impl Strategy<Value = Incoming> {
    prop_oneof![
        upstream().prop_map(Incoming::Upstream),
        ack().prop_map(Incoming::Ack),
        nack().prop_map(Incoming::Nack),
        receipt().prop_map(Incoming::Receipt),
        control().prop_map(Incoming::Control),
        (
            hostile().prop_filter("unknown", |s| {
                !["ack", "nack", "receipt", "control"].contains(&s.as_str())
            }),
            extra_avoiding(&["message_type"]),
        )
            .prop_map(|(message_type, json)| Incoming::Unknown { message_type, json }),
    ]
}

/// A field that is usually absent or well-typed (`good`), sometimes any JSON value.
fn field(good: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Option<Value>> {
    prop_oneof![
        10 => good.prop_map(Some),
        6 => Just(None),
        1 => json_value().prop_map(Some),
    ]
    .boxed()
}

fn string_value() -> impl Strategy<Value = Value> {
    hostile().prop_map(Value::String)
}

/// A JSON object shaped like the messages of either side (known keys, mostly well-typed),
/// to find inputs that decode but do not re-encode to the same thing.
fn ccs_like_object() -> impl Strategy<Value = String> {
    let message_type = prop_oneof![
        Just("ack"),
        Just("nack"),
        Just("receipt"),
        Just("control"),
        Just("other"),
    ]
    .prop_map(|s| Value::String(s.to_owned()));
    let receipt_data = prop_oneof![
        Just(
            serde_json::json!({"message_status": "MESSAGE_SENT_TO_DEVICE",
            "original_message_id": "m-1", "device_registration_id": "d",
            "message_sent_timestamp": "1498801519251"})
        ),
        Just(serde_json::json!({"message_status": "X", "message_sent_timestamp": 12})),
        Just(serde_json::json!({"message_status": "S", "original_message_id": null})),
        object().prop_map(Value::Object),
    ];
    let control_type = prop_oneof![
        Just(Value::String("CONNECTION_DRAINING".to_owned())),
        string_value(),
    ];
    let error = raw_error().prop_map(Value::String);
    let boolean = || any::<bool>().prop_map(Value::Bool);
    (
        (
            field(message_type),
            field(string_value()),
            field(string_value()),
            field(string_value()),
            field(string_value()),
            field(receipt_data),
        ),
        (
            field((0u64..=2_419_200).prop_map(Value::from)),
            field(string_value()),
            field(error),
            field(string_value()),
            field(control_type),
            field(boolean()),
        ),
        (
            field(boolean()),
            field(
                prop_oneof![Just("high"), Just("normal")].prop_map(|s| Value::String(s.to_owned())),
            ),
            field(Just(
                serde_json::json!({"title": "t", "body_loc_args": ["a"], "x": 1}),
            )),
            object(),
        ),
    )
        .prop_map(|(a, b, c)| {
            let names = [
                "message_type",
                "message_id",
                "from",
                "to",
                "category",
                "data",
                "time_to_live",
                "registration_id",
                "error",
                "error_description",
                "control_type",
                "dry_run",
                "delivery_receipt_requested",
                "priority",
                "notification",
            ];
            let values = [
                a.0, a.1, a.2, a.3, a.4, a.5, b.0, b.1, b.2, b.3, b.4, b.5, c.0, c.1, c.2,
            ];
            let mut m = c.3;
            for (name, value) in names.into_iter().zip(values) {
                if let Some(v) = value {
                    m.insert(name.to_owned(), v);
                }
            }
            serde_json::to_string(&m).unwrap()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn downstream_round_trips(d in full_downstream()) {
        let text = serde_json::to_string(&d).unwrap();
        let back: Downstream = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(&back, &d);
        prop_assert_eq!(ClientMessage::from_json(&text).unwrap(), ClientMessage::Downstream(d.clone()));
        // Through the generic serde path as well.
        let value = serde_json::to_value(&d).unwrap();
        prop_assert_eq!(serde_json::from_value::<Downstream>(value).unwrap(), d);
    }

    #[test]
    fn incoming_round_trips(m in incoming()) {
        let text = serde_json::to_string(&m).unwrap();
        let back = Incoming::from_json(&text);
        prop_assert_eq!(back.as_ref(), Ok(&m), "{}", text);
    }

    #[test]
    fn app_ack_round_trips(to in hostile(), id in legal_id()) {
        let ack = AppAck { to, message_id: MessageId::new(id).unwrap() };
        let text = serde_json::to_string(&ack).unwrap();
        prop_assert_eq!(ClientMessage::from_json(&text).unwrap(), ClientMessage::Ack(ack));
    }

    #[test]
    fn ack_for_matches_the_message(m in incoming()) {
        let ack = m.ack_for();
        match &m {
            Incoming::Upstream(u) => {
                prop_assert_eq!(ack, Some(AppAck { to: u.from.clone(), message_id: u.message_id.clone() }));
            }
            Incoming::Receipt(r) => {
                prop_assert_eq!(ack, Some(AppAck { to: r.from.clone(), message_id: r.message_id.clone() }));
            }
            _ => prop_assert_eq!(ack, None),
        }
    }

    #[test]
    fn decoders_never_panic(text in any::<String>()) {
        let _ = Incoming::from_json(&text);
        let _ = ClientMessage::from_json(&text);
    }

    #[test]
    fn decoders_never_panic_on_json(v in json_value()) {
        let text = serde_json::to_string(&v).unwrap();
        let _ = Incoming::from_json(&text);
        let _ = ClientMessage::from_json(&text);
    }

    #[test]
    fn receipts_keep_their_typed_fields(r in receipt()) {
        prop_assert_eq!(&r.status, &ReceiptStatus::MessageSentToDevice);
        prop_assert!(r.message_id.as_str().starts_with("dr2:"));
    }

    #[test]
    fn message_id_accepts_exactly_xml_legal_ids(s in prop_oneof![hostile(), any::<String>()]) {
        let legal = !s.is_empty() && s.len() <= MessageId::MAX_LEN && s.chars().all(xml_char);
        prop_assert_eq!(MessageId::new(s.clone()).is_ok(), legal, "{:?}", s);
        let reg_legal = !s.is_empty() && s.chars().all(xml_char);
        prop_assert_eq!(ccs_proto::message::RegistrationId::new(s.clone()).is_ok(), reg_legal);
        prop_assert_eq!(Downstream::builder(s.clone(), "m").is_ok(), reg_legal);
    }

    #[test]
    fn nack_code_parse_is_total_and_stable(s in raw_error()) {
        let code = NackCode::parse(&s);
        // Parsing the code's own text gives the code back.
        prop_assert_eq!(NackCode::parse(code.as_str()), code);
    }
}

proptest! {
    // Most generated objects are refused; more cases give each kind enough that decode.
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn decoded_messages_re_encode_to_themselves(text in ccs_like_object()) {
        if let Ok(m) = Incoming::from_json(&text) {
            let again = serde_json::to_string(&m).unwrap();
            let back = Incoming::from_json(&again);
            prop_assert_eq!(back.as_ref(), Ok(&m), "{} -> {}", text, again);
        }
        if let Ok(m) = ClientMessage::from_json(&text) {
            let again = serde_json::to_string(&m).unwrap();
            let back = ClientMessage::from_json(&again);
            prop_assert_eq!(back.as_ref(), Ok(&m), "{} -> {}", text, again);
        }
    }
}
