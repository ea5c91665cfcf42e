//! The leniency rule of `Incoming::from_json` (see the `message` module docs): a message
//! that must be acked (an upstream message, a receipt) is never refused because an optional
//! field has an unexpected type or a field is given twice; the value is kept in `extra` (or
//! in a receipt's `data`) as received. Only a missing or non-string `from` / `message_id`
//! (nothing to ack) or a non-string `message_type` is still an error.

use std::time::Instant;

use ccs_proto::connection::{ConnId, State};
use ccs_proto::message::{
    Ack, AppAck, Incoming, MessageId, Nack, NackCode, Receipt, ReceiptStatus, RetryClass, Upstream,
};
use ccs_proto::testing::Pair;
use ccs_proto::{Connection, ConnectionEvent};
use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn incoming(text: &str) -> Incoming {
    match Incoming::from_json(text) {
        Ok(m) => m,
        Err(e) => panic!("{text}\n=> {e}"),
    }
}

fn upstream(text: &str) -> Upstream {
    match incoming(text) {
        Incoming::Upstream(u) => u,
        other => panic!("{text}\n=> not upstream: {other:?}"),
    }
}

fn receipt(text: &str) -> Receipt {
    match incoming(text) {
        Incoming::Receipt(r) => r,
        other => panic!("{text}\n=> not a receipt: {other:?}"),
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

/// Re-encoding gives the same message back, and the same JSON object as `text` (so nothing
/// the server sent is lost or altered on the way to the application).
fn re_encodes_to_the_same_object(m: &Incoming, text: &str) {
    let again = serde_json::to_string(m).unwrap();
    assert_eq!(&Incoming::from_json(&again).unwrap(), m, "{again}");
    let original: Value = serde_json::from_str(text).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&again).unwrap(),
        original,
        "{text}"
    );
}

// ----- upstream: time_to_live -----------------------------------------------------------------

#[test]
fn upstream_ttl_as_digit_string_or_integral_float_is_read_as_the_number() {
    let cases = [
        (r#""86400""#, 86_400),
        ("86400.0", 86_400),
        ("8.64e4", 86_400),
        ("0.0", 0),
        (r#""0""#, 0),
        (r#""007""#, 7),
        (r#""18446744073709551615""#, u64::MAX),
        ("1e19", 10_000_000_000_000_000_000),
    ];
    for (ttl, seconds) in cases {
        let text = format!(r#"{{"from":"R","message_id":"m","data":{{}},"time_to_live":{ttl}}}"#);
        let u = upstream(&text);
        assert_eq!(u.time_to_live, Some(seconds), "{text}");
        assert!(u.extra.is_empty(), "{text}: {u:?}");
        // Written back as a number.
        let v: Value = serde_json::to_value(&u).unwrap();
        assert_eq!(v["time_to_live"], json!(seconds), "{text}");
        assert_eq!(
            Incoming::from_json(&v.to_string()).unwrap(),
            Incoming::Upstream(u)
        );
    }
}

#[test]
fn upstream_ttl_of_any_other_shape_is_kept_in_extra() {
    let cases = [
        r#""1 day""#,
        r#""-1""#,
        r#""+5""#,
        r#"" 5""#,
        r#""5 ""#,
        r#""""#,
        r#""1.5""#,
        r#""18446744073709551616""#,
        r#""٣""#,
        "-1",
        "-0.5",
        "1.5",
        "1e20",
        "true",
        "[86400]",
        r#"{"seconds":86400}"#,
    ];
    for ttl in cases {
        let text = format!(r#"{{"from":"R","message_id":"m","data":{{}},"time_to_live":{ttl}}}"#);
        let m = incoming(&text);
        let Incoming::Upstream(u) = &m else {
            panic!("{text}: {m:?}")
        };
        assert_eq!(u.time_to_live, None, "{text}");
        let raw: Value = serde_json::from_str(ttl).unwrap();
        assert_eq!(u.extra.get("time_to_live"), Some(&raw), "{text}");
        assert_eq!(u.extra.len(), 1, "{text}");
        assert_eq!(m.ack_for().unwrap().message_id.as_str(), "m");
        re_encodes_to_the_same_object(&m, &text);
    }
    // Null is absent, as for every optional field.
    let u = upstream(r#"{"from":"R","message_id":"m","time_to_live":null}"#);
    assert_eq!(u.time_to_live, None);
    assert!(u.extra.is_empty());
}

// ----- upstream: category, data -----------------------------------------------------------------

#[test]
fn upstream_category_and_data_of_other_types_are_kept_in_extra() {
    let cases = [
        (r#"{"from":"R","message_id":"m","category":1}"#, "category"),
        (
            r#"{"from":"R","message_id":"m","category":{"name":"com.example"}}"#,
            "category",
        ),
        (r#"{"from":"R","message_id":"m","data":"hello"}"#, "data"),
        (r#"{"from":"R","message_id":"m","data":[1,"a"]}"#, "data"),
        (r#"{"from":"R","message_id":"m","data":false}"#, "data"),
        (r#"{"from":"R","message_id":"m","data":0}"#, "data"),
    ];
    for (text, field) in cases {
        let m = incoming(text);
        let Incoming::Upstream(u) = &m else {
            panic!("{text}: {m:?}")
        };
        assert_eq!(u.from, "R");
        assert_eq!(u.message_id.as_str(), "m");
        let original = obj(serde_json::from_str(text).unwrap());
        assert_eq!(u.extra.get(field), original.get(field), "{text}");
        assert_eq!(u.extra.len(), 1, "{text}");
        assert_eq!(u.category, None);
        assert!(u.data.is_empty());
        assert_eq!(
            m.ack_for(),
            Some(AppAck {
                to: "R".into(),
                message_id: MessageId::new("m").unwrap(),
            })
        );
        // `data` was absent in the category cases: it is written as `{}`.
        let mut expected = original;
        expected.entry("data").or_insert_with(|| json!({}));
        re_encodes_to_the_same_object(&m, &Value::Object(expected).to_string());
    }
}

#[test]
fn upstream_with_every_optional_field_wrong_still_reaches_the_application() {
    let text = r#"{"from":"DEV","message_id":"u-1","category":7,"data":"raw payload",
        "time_to_live":"a week","registration_id":[],"error":{},"new":null}"#;
    let m = incoming(text);
    let Incoming::Upstream(u) = &m else {
        panic!("{m:?}")
    };
    assert_eq!(u.from, "DEV");
    assert_eq!(u.message_id.as_str(), "u-1");
    assert_eq!(
        u.extra,
        obj(
            json!({"category": 7, "data": "raw payload", "time_to_live": "a week",
            "registration_id": [], "error": {}, "new": null})
        )
    );
    re_encodes_to_the_same_object(&m, text);
}

// ----- duplicates: the Value fallback -------------------------------------------------------------

#[test]
fn upstream_with_a_known_field_given_twice_is_delivered_with_the_last_value() {
    let cases = [
        (
            r#"{"from":"R","message_id":"m","category":"a","category":"b"}"#,
            json!({"from": "R", "message_id": "m", "category": "b", "data": {}}),
        ),
        (
            r#"{"from":"R","data":{"k":1},"message_id":"m","data":{"k":2}}"#,
            json!({"from": "R", "message_id": "m", "data": {"k": 2}}),
        ),
        (
            r#"{"time_to_live":1,"from":"R","message_id":"m","time_to_live":"x"}"#,
            json!({"from": "R", "message_id": "m", "data": {}, "time_to_live": "x"}),
        ),
        // `from` and `message_id` themselves: the last one is acked.
        (
            r#"{"from":5,"message_id":"m","from":"R"}"#,
            json!({"from": "R", "message_id": "m", "data": {}}),
        ),
        (
            r#"{"from":"R","message_id":"m-old","message_id":"m"}"#,
            json!({"from": "R", "message_id": "m", "data": {}}),
        ),
        // A `message_type` whose last value is null is an upstream message.
        (
            r#"{"message_type":"ack","from":"R","message_id":"m","message_type":null}"#,
            json!({"from": "R", "message_id": "m", "data": {}}),
        ),
    ];
    for (text, expected) in cases {
        let m = incoming(text);
        assert!(matches!(m, Incoming::Upstream(_)), "{text}: {m:?}");
        assert_eq!(serde_json::to_value(&m).unwrap(), expected, "{text}");
        let ack = m.ack_for().unwrap();
        assert_eq!((ack.to.as_str(), ack.message_id.as_str()), ("R", "m"));
    }
}

#[test]
fn receipt_with_a_field_given_twice_is_still_acked() {
    let text = r#"{"message_type":"receipt","from":"gcm.googleapis.com","message_id":"dr2:1",
        "data":{"message_status":"MESSAGE_SENT_TO_DEVICE"},"category":"a","category":"b"}"#;
    let r = receipt(text);
    assert_eq!(r.category.as_deref(), Some("b"));
    assert_eq!(r.status, ReceiptStatus::MessageSentToDevice);
    assert_eq!(r.ack().message_id.as_str(), "dr2:1");
}

#[test]
fn acks_and_nacks_with_a_field_given_twice_stay_errors() {
    // Which of our messages they answer is ambiguous, and they are never acked anyway.
    for text in [
        r#"{"message_type":"ack","message_id":"a","message_id":"b"}"#,
        r#"{"message_type":"ack","message_id":"a","from":"x","from":"y"}"#,
        r#"{"message_type":"nack","message_id":"a","error":"BAD_ACK","error":"X"}"#,
        r#"{"message_type":"control","control_type":"A","control_type":"B"}"#,
        r#"{"message_type":"x","message_type":"ack","message_id":"a"}"#,
    ] {
        let e = Incoming::from_json(text).unwrap_err();
        assert!(e.detail.contains("duplicate field"), "{text}: {e}");
    }
}

// ----- receipts ------------------------------------------------------------------------------------

#[test]
fn receipt_with_odd_data_is_still_acked() {
    let id = "dr2:m-1";
    let cases = [
        // No `data` at all, an empty one, or one that is not an object.
        (json!(null), ReceiptStatus::Other(String::new())),
        (json!({}), ReceiptStatus::Other(String::new())),
        (json!("x"), ReceiptStatus::Other(String::new())),
        (json!([1]), ReceiptStatus::Other(String::new())),
        (
            json!({"message_status": 7}),
            ReceiptStatus::Other(String::new()),
        ),
        (
            json!({"message_status": "MESSAGE_SENT_TO_DEVICE", "original_message_id": 39,
                "device_registration_id": {"a": 1}, "message_sent_timestamp": "12a"}),
            ReceiptStatus::MessageSentToDevice,
        ),
        (
            json!({"message_status": "S", "message_sent_timestamp": -5}),
            ReceiptStatus::Other("S".into()),
        ),
        (
            json!({"message_status": "S", "message_sent_timestamp": "99999999999999999999"}),
            ReceiptStatus::Other("S".into()),
        ),
    ];
    for (data, status) in cases {
        let mut object = obj(
            json!({"message_type": "receipt", "from": "gcm.googleapis.com",
            "message_id": id, "category": 3}),
        );
        if !data.is_null() {
            object.insert("data".into(), data.clone());
        }
        let text = Value::Object(object.clone()).to_string();
        let m = incoming(&text);
        let Incoming::Receipt(r) = &m else {
            panic!("{text}: {m:?}")
        };
        assert_eq!(r.status, status, "{text}");
        assert_eq!(r.original_message_id, None, "{text}");
        assert_eq!(r.device_registration_id, None, "{text}");
        assert_eq!(r.sent_timestamp, None, "{text}");
        assert_eq!(r.category, None, "{text}");
        assert_eq!(r.extra.get("category"), Some(&json!(3)), "{text}");
        match &data {
            Value::Object(d) => assert_eq!(&r.data, d, "{text}"),
            Value::Null => assert!(r.data.is_empty()),
            other => {
                assert!(r.data.is_empty());
                assert_eq!(r.extra.get("data"), Some(other), "{text}");
            }
        }
        assert_eq!(
            m.ack_for(),
            Some(AppAck {
                to: "gcm.googleapis.com".into(),
                message_id: MessageId::new(id).unwrap(),
            })
        );
        // An absent `data` is written as `{}`, as an empty one.
        object.entry("data").or_insert_with(|| json!({}));
        re_encodes_to_the_same_object(&m, &Value::Object(object).to_string());
    }
}

#[test]
fn receipt_without_from_or_message_id_is_still_an_error() {
    for (text, field) in [
        (
            r#"{"message_type":"receipt","message_id":"dr2:1","data":{"message_status":"S"}}"#,
            "from",
        ),
        (
            r#"{"message_type":"receipt","from":"g","data":{"message_status":"S"}}"#,
            "message_id",
        ),
        (
            r#"{"message_type":"receipt","from":["g"],"message_id":"dr2:1"}"#,
            "from",
        ),
        (
            r#"{"message_type":"receipt","from":"g","message_id":1}"#,
            "message_id",
        ),
    ] {
        let e = Incoming::from_json(text).unwrap_err();
        assert!(e.detail.contains(&format!("`{field}`")), "{text}: {e}");
    }
}

// ----- acks, nacks ---------------------------------------------------------------------------------

#[test]
fn ack_and_nack_optional_fields_of_other_types_are_kept_in_extra() {
    let text = r#"{"message_type":"ack","message_id":"m","from":true,"registration_id":[]}"#;
    let m = incoming(text);
    let Incoming::Ack(a) = &m else {
        panic!("{m:?}")
    };
    assert_eq!(a.from, None);
    assert_eq!(a.registration_id, None);
    assert_eq!(a.extra, obj(json!({"from": true, "registration_id": []})));
    re_encodes_to_the_same_object(&m, text);

    let text =
        r#"{"message_type":"nack","message_id":"m","from":1,"error":404,"error_description":{}}"#;
    let m = incoming(text);
    let Incoming::Nack(n) = &m else {
        panic!("{m:?}")
    };
    assert_eq!(n.from, None);
    assert_eq!(n.error, NackCode::Unknown(String::new()));
    assert_eq!(n.raw_error, "");
    assert_eq!(n.error.retry_class(), RetryClass::Backoff);
    assert_eq!(n.error_description, None);
    assert_eq!(
        n.extra,
        obj(json!({"from": 1, "error": 404, "error_description": {}}))
    );
    re_encodes_to_the_same_object(&m, text);
}

#[test]
fn hand_built_values_still_write_typed_fields_over_extra() {
    // An `extra` entry named after a typed field is written only while that field is empty.
    let mut ack = Ack::new(MessageId::new("m").unwrap());
    ack.from = Some("typed".into());
    ack.extra.insert("from".into(), json!(1));
    ack.extra.insert("registration_id".into(), json!(2));
    assert_eq!(
        serde_json::to_value(&ack).unwrap(),
        json!({"message_type": "ack", "message_id": "m", "from": "typed", "registration_id": 2})
    );
    let mut nack = Nack::new(MessageId::new("m").unwrap(), NackCode::BadAck);
    nack.extra.insert("error".into(), json!(404));
    assert_eq!(serde_json::to_value(&nack).unwrap()["error"], "BAD_ACK");
}

// ----- what is still refused ---------------------------------------------------------------------

#[test]
fn messages_without_a_usable_from_and_message_id_are_still_errors() {
    for (text, field) in [
        (r#"{"message_id":"m","data":{}}"#, "from"),
        (r#"{"from":null,"message_id":"m"}"#, "from"),
        (r#"{"from":7,"message_id":"m","category":7}"#, "from"),
        (r#"{"from":"R","data":{}}"#, "message_id"),
        (r#"{"from":"R","message_id":12}"#, "message_id"),
        (
            r#"{"from":"R","message_id":"m","message_type":7}"#,
            "message_type",
        ),
        (r#"{"message_type":"ack","message_id":5}"#, "message_id"),
        (
            r#"{"message_type":"control","control_type":false}"#,
            "control_type",
        ),
    ] {
        let e = Incoming::from_json(text).unwrap_err();
        assert!(e.detail.contains(&format!("`{field}`")), "{text}: {e}");
    }
    for text in [
        "",
        "[]",
        r#"{"from":"R","message_id":"m""#,
        r#"{"from":"R","message_id":"m"} x"#,
    ] {
        assert!(Incoming::from_json(text).is_err(), "{text}");
    }
}

// ----- through a connection: acked, delivered, no anomaly -------------------------------------------

#[allow(clippy::disallowed_methods)] // the simulated clock's epoch
fn epoch() -> Instant {
    Instant::now()
}

const THROUGH_BIND: &str = "<stream:stream from='gcm.googleapis.com' id='1' version='1.0' \
    xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client'>\
    <stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>\
    <mechanism>PLAIN</mechanism></mechanisms></stream:features>\
    <success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>\
    <stream:stream from='gcm.googleapis.com' id='2' version='1.0' \
    xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client'>\
    <stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>\
    <iq type='result' id='bind_1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
    <jid>123456789012@gcm.googleapis.com/R</jid></bind></iq>";

#[test]
fn a_connection_acks_and_delivers_messages_with_odd_fields() {
    let now = epoch();
    let mut config = Pair::client_config();
    config.request_session = false;
    let mut conn = Connection::new(ConnId(1), config, now).unwrap();
    conn.handle_input(now, THROUGH_BIND.as_bytes());
    assert_eq!(conn.state(), State::Connected);
    while conn.poll_transmit().is_some() {}
    while conn.poll_event().is_some() {}
    let payloads = [
        r#"{"from":"DEV","message_id":"u1","data":{"a":"b"},"time_to_live":"86400"}"#,
        r#"{"from":"DEV","message_id":"u2","category":42,"data":"not an object"}"#,
        r#"{"from":"DEV","message_id":"u3","data":{},"data":{"again":true}}"#,
        r#"{"message_type":"receipt","from":"gcm.googleapis.com","message_id":"dr2:x","data":{}}"#,
    ];
    for p in payloads {
        let stanza =
            format!("<message type='normal'><gcm xmlns='google:mobile:data'>{p}</gcm></message>");
        conn.handle_input(now, stanza.as_bytes());
    }
    let events: Vec<_> = std::iter::from_fn(|| conn.poll_event()).collect();
    let delivered: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            ConnectionEvent::Upstream { message, .. } => Some(message.message_id.as_str()),
            ConnectionEvent::Receipt { receipt, .. } => Some(receipt.message_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(delivered, ["u1", "u2", "u3", "dr2:x"], "{events:?}");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, ConnectionEvent::Anomaly(_))),
        "{events:?}"
    );
    let out = String::from_utf8(
        std::iter::from_fn(|| conn.poll_transmit())
            .flatten()
            .collect(),
    )
    .unwrap();
    for id in ["u1", "u2", "u3", "dr2:x"] {
        assert!(
            out.contains(&format!(r#""message_id":"{id}","message_type":"ack""#)),
            "{id}: {out}"
        );
    }
}

// ----- properties ----------------------------------------------------------------------------------

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-4000i32..4000).prop_map(|i| Value::from(f64::from(i) / 8.0)),
        "[0-9]{1,22}".prop_map(Value::String),
        "\\PC{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            vec(("[a-z_]{0,6}", inner), 0..4)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// A field name: mostly one the decoder knows (for some message kind), sometimes any other.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop_oneof![
            Just("category"),
            Just("data"),
            Just("time_to_live"),
            Just("registration_id"),
            Just("error"),
            Just("error_description"),
            Just("control_type"),
        ]
        .prop_map(str::to_owned),
        1 => "[a-z_]{0,8}".prop_filter("not a required name", |s| {
            !["from", "message_id", "message_type"].contains(&s.as_str())
        }),
    ]
}

/// A `message_id` `MessageId::new` accepts.
fn valid_id() -> impl Strategy<Value = String> {
    "\\PC{1,12}".prop_filter("valid", |s| MessageId::new(s.as_str()).is_ok())
}

/// The JSON text of an object with string `from` and `message_id` (each given once, at
/// random places), an optional `message_type` of `kind`, and other fields of any type, names
/// possibly repeated.
fn ackable_text(kind: Option<&'static str>) -> impl Strategy<Value = (String, String, String)> {
    (
        "\\PC{0,12}",
        valid_id(),
        vec((field_name(), json_value()), 0..8),
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
    )
        .prop_map(move |(from, id, mut fields, at_from, at_id)| {
            fields.insert(
                at_from.index(fields.len() + 1),
                ("from".into(), json!(from)),
            );
            fields.insert(
                at_id.index(fields.len() + 1),
                ("message_id".into(), json!(id)),
            );
            if let Some(kind) = kind {
                fields.push(("message_type".into(), json!(kind)));
            }
            let body: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("{}:{v}", Value::String(k.clone())))
                .collect();
            (format!("{{{}}}", body.join(",")), from, id)
        })
}

/// A char boundary of `s` picked by `at`.
fn char_boundary(s: &str, at: prop::sample::Index) -> usize {
    let mut i = at.index(s.len() + 1);
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Texts near CCS messages: ackable objects, cut short or with a byte changed, and any string.
fn messy_text() -> impl Strategy<Value = String> {
    prop_oneof![
        ackable_text(None).prop_map(|t| t.0),
        ackable_text(Some("receipt")).prop_map(|t| t.0),
        (ackable_text(None), any::<prop::sample::Index>())
            .prop_map(|((t, _, _), at)| t[..char_boundary(&t, at)].to_owned()),
        (
            ackable_text(None),
            any::<prop::sample::Index>(),
            any::<char>()
        )
            .prop_map(|((t, _, _), at, c)| {
                let i = char_boundary(&t, at);
                format!("{}{c}{}", &t[..i], &t[i..])
            }),
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn any_object_with_from_and_message_id_is_upstream((text, from, id) in ackable_text(None)) {
        let m = Incoming::from_json(&text);
        let Ok(Incoming::Upstream(u)) = &m else {
            return Err(TestCaseError::fail(format!("{text}\n=> {m:?}")));
        };
        prop_assert_eq!(&u.from, &from);
        prop_assert_eq!(u.message_id.as_str(), id.as_str());
        // Every other field reaches the application, typed or raw, with its last value.
        let expected = obj(serde_json::from_str(&text).unwrap());
        for (k, v) in &expected {
            let kept = match k.as_str() {
                "from" | "message_id" => true,
                "category" => u.category.as_deref().map(Value::from).as_ref() == Some(v)
                    || u.extra.get(k) == Some(v),
                "data" => v.as_object() == Some(&u.data) || u.extra.get(k) == Some(v),
                "time_to_live" => u.time_to_live.is_some() || u.extra.get(k) == Some(v),
                _ => u.extra.get(k) == Some(v),
            };
            prop_assert!(kept || v.is_null(), "{}: {} lost in {:?}", text, k, u);
        }
        // And the message re-encodes to itself.
        let again = serde_json::to_string(&m.as_ref().unwrap()).unwrap();
        let back = Incoming::from_json(&again);
        prop_assert_eq!(back.as_ref(), m.as_ref(), "{}", again);
    }

    #[test]
    fn any_receipt_with_from_and_message_id_is_acked((text, from, id) in ackable_text(Some("receipt"))) {
        let m = Incoming::from_json(&text);
        let Ok(Incoming::Receipt(r)) = &m else {
            return Err(TestCaseError::fail(format!("{text}\n=> {m:?}")));
        };
        prop_assert_eq!(
            r.ack(),
            AppAck { to: from, message_id: MessageId::new(id).unwrap() }
        );
        let again = serde_json::to_string(&m.as_ref().unwrap()).unwrap();
        let back = Incoming::from_json(&again);
        prop_assert_eq!(back.as_ref(), m.as_ref(), "{}", again);
    }

    #[test]
    fn from_json_never_panics_and_never_refuses_an_ackable_object(text in messy_text()) {
        let m = Incoming::from_json(&text);
        // Whatever a JSON parser makes of the text, as the rule reads it.
        let Ok(Value::Object(o)) = serde_json::from_str::<Value>(&text) else {
            return Ok(());
        };
        let ackable = matches!(o.get("from"), Some(Value::String(_)))
            && matches!(o.get("message_id"), Some(Value::String(s)) if MessageId::new(s.as_str()).is_ok());
        let expected_ack = ackable.then(|| AppAck {
            to: o["from"].as_str().unwrap().to_owned(),
            message_id: MessageId::new(o["message_id"].as_str().unwrap()).unwrap(),
        });
        match o.get("message_type") {
            None | Some(Value::Null) if ackable => {
                prop_assert!(matches!(m, Ok(Incoming::Upstream(_))), "{} => {:?}", text, m);
                prop_assert_eq!(m.unwrap().ack_for(), expected_ack);
            }
            Some(Value::String(t)) if t == "receipt" && ackable => {
                prop_assert!(matches!(m, Ok(Incoming::Receipt(_))), "{} => {:?}", text, m);
                prop_assert_eq!(m.unwrap().ack_for(), expected_ack);
            }
            _ => {}
        }
    }
}
