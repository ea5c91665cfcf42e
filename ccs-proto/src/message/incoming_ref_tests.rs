//! The JSON fast path ([`IncomingRef::parse`]) against the general path
//! ([`Incoming::from_json_general`]): on every text the fast path either declines or its owned
//! form is exactly what the general path gives, and [`Incoming::from_json`] (fast, then
//! general) always equals the general path, errors included.

use proptest::prelude::*;

use super::{Incoming, IncomingRef, NackCode};
use crate::mutation::{apply, ops};

const SEEDS: &[&str] = &[
    r#"{"from":"APA91bHFOtaQGSwupt5l1og000001","message_id":"m-0000000001","message_type":"ack"}"#,
    r#"{"message_type":"ack","message_id":"m-1","from":"APA91b","registration_id":"APA91c"}"#,
    r#"{"message_type":"ack","message_id":"m-1"}"#,
    r#"{"message_type":"nack","message_id":"m-2","from":"APA91b","error":"BAD_REGISTRATION","error_description":"Invalid token"}"#,
    r#"{"message_type":"nack","message_id":"m-3","error":"InvalidJson : INVALID_TTL : Invalid value (-1)"}"#,
    r#"{"message_type":"nack","message_id":"m-4","error":"CONNECTION_DRAINING"}"#,
    r#"{"message_type":"nack","message_id":"m-5","error":"BAD_ACK"}"#,
    r#"{"message_type":"nack","message_id":"m-6","error":"NEW_CODE","error_description":"é😀 <&"}"#,
    r#"{"category":"com.example","data":{"message_status":"MESSAGE_SENT_TO_DEVICE","original_message_id":"m-3","device_registration_id":"APA91b","message_sent_timestamp":"1430277821658"},"message_id":"dr2:m-3","message_type":"receipt","from":"gcm.googleapis.com"}"#,
    r#"{"category":"com.example.yourapp","data":{"hello":"world"},"message_id":"u-1","from":"APA91b","time_to_live":86400}"#,
    r#"{"message_type":"control","control_type":"CONNECTION_DRAINING"}"#,
    "{\n  \"message_type\" : \"ack\" ,\n\t\"message_id\":\"m-7\"\r\n}\n",
    "{}",
];

const TOKENS: &[&[u8]] = &[
    br#"\""#,
    br"\u0041",
    br"\u005f",
    br"\n",
    br"\\",
    br"\/",
    br#""x":"y","#,
    br#""from":"a","#,
    br#""from":null,"#,
    br#""message_id":"m-9","#,
    br#""message_type":"ack","#,
    br#""message_type":"nack","#,
    br#""message_type":"ACK","#,
    br#""registration_id":"r","#,
    br#""error":"BAD_ACK","#,
    br#""error":1,"#,
    br#""error_description":"d","#,
    br#""category":"c","#,
    br#""data":{},"#,
    b"1",
    b"-1",
    b"1.5e3",
    b"null",
    b"true",
    b"{}",
    b"[]",
    br#"{"a":"b"}"#,
    b",",
    b":",
    b"\"",
    b"{",
    b"}",
    b" ",
    b"\t",
    b"\n",
    b"\r",
    b"\x0c",
    b"\0",
    b"\x1f",
    b"\x7f",
    "\u{FEFF}".as_bytes(),
    "\u{2028}".as_bytes(),
    "é".as_bytes(),
    "😀".as_bytes(),
    b"\xff",
    b"a",
];

/// Checks both paths on one text; `true` when the fast path took it.
fn agree(json: &str) -> Result<bool, TestCaseError> {
    let general = Incoming::from_json_general(json);
    let fast = IncomingRef::parse(json);
    if let Some(view) = fast {
        if let (IncomingRef::Nack(n), Ok(Incoming::Nack(owned))) = (view, &general) {
            prop_assert_eq!(&n.code(), &owned.error);
        }
        prop_assert_eq!(Ok(view.into_owned()), general.clone(), "{:?}", json);
    }
    prop_assert_eq!(Incoming::from_json(json), general);
    Ok(fast.is_some())
}

fn mutated() -> impl Strategy<Value = String> {
    (0..SEEDS.len(), ops(TOKENS.len(), 4)).prop_map(|(seed, ops)| {
        String::from_utf8_lossy(&apply(SEEDS[seed].as_bytes(), &ops, TOKENS)).into_owned()
    })
}

/// Objects built from the fields acks and nacks have, in any order, with near misses: now and
/// then a value of another type or with an escape, an odd `message_type`, a field missing or
/// given twice, whitespace JSON does not allow, a tail after the object.
fn near() -> impl Strategy<Value = String> {
    use prop::sample::select;
    let ws = || {
        prop_oneof![
            30 => select(vec!["", "", " ", "\n", "\t\r\n "]),
            1 => select(vec!["\u{c}", "\u{a0}"]),
        ]
    };
    let value = || {
        prop_oneof![
            8 => select(vec![
                "\"m-1\"", "\"\"", "\"é <&>\"", "\"BAD_ACK\"", "\"CONNECTION_DRAINING\"",
                "\"InvalidJson : INVALID_TTL\"",
            ]),
            1 => select(vec![
                "null", "1", "-1", "1.0", "true", "{}", "[]", "\"a\\\"b\"", "\"a\u{1}b\"",
                "\"a\u{7f}b\"",
            ]),
        ]
    };
    let kind = prop_oneof![
        8 => select(vec!["\"ack\"", "\"nack\""]),
        1 => select(vec!["\"ACK\"", "\"receipt\"", "\"\\u0061ck\"", "null", "1"]),
    ];
    let field = move |name: &'static str, v: BoxedStrategy<&'static str>| {
        (ws(), v, ws()).prop_map(move |(a, v, b)| format!("{a}\"{name}\"{b}:{a}{v}{b}"))
    };
    let odd_name = select(vec![
        "message_type",
        "message_id",
        "from",
        "category",
        "control_type",
        "x",
        "message\\u005ftype",
    ]);
    let fields = (
        prop::option::weighted(0.95, field("message_type", kind.boxed())),
        prop::option::weighted(0.95, field("message_id", value().boxed())),
        prop::option::weighted(0.3, field("from", value().boxed())),
        prop::option::weighted(0.3, field("registration_id", value().boxed())),
        prop::option::weighted(0.3, field("error", value().boxed())),
        prop::option::weighted(0.3, field("error_description", value().boxed())),
        prop::option::weighted(
            0.1,
            (odd_name, value()).prop_map(|(n, v)| format!("\"{n}\":{v}")),
        ),
    )
        .prop_flat_map(|(a, b, c, d, e, f, g)| {
            let v: Vec<String> = [a, b, c, d, e, f, g].into_iter().flatten().collect();
            Just(v).prop_shuffle()
        });
    let tail = prop_oneof![15 => Just(""), 1 => select(vec![",", "x", "{}", "\u{feff}"])];
    (ws(), fields, ws(), tail)
        .prop_map(|(a, fields, b, tail)| format!("{a}{{{}}}{b}{tail}", fields.join(",")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn mutations_of_ccs_json_decline_or_agree(json in mutated()) {
        agree(&json)?;
    }

    #[test]
    fn near_misses_decline_or_agree(json in near()) {
        agree(&json)?;
    }

    #[test]
    fn arbitrary_text_declines_or_agrees(json in any::<String>()) {
        agree(&json)?;
    }

    #[test]
    fn huge_strings_decline_or_agree(n in 0usize..100_000, nack in any::<bool>()) {
        let big = "é".repeat(n);
        let json = if nack {
            format!(r#"{{"message_type":"nack","message_id":"{big}","error_description":"{big}"}}"#)
        } else {
            format!(r#"{{"from":"{big}","message_id":"{big}","message_type":"ack"}}"#)
        };
        prop_assert!(agree(&json)?);
    }
}

/// How many of 1,000 texts drawn from `strategy` the fast path takes, and declines.
fn outcomes(strategy: impl Strategy<Value = String>) -> (usize, usize) {
    crate::mutation::outcomes(strategy, |text: &String| agree(text))
}

#[test]
fn the_properties_reach_both_outcomes() {
    for (took, declined) in [outcomes(mutated()), outcomes(near())] {
        assert!(
            took >= 100 && declined >= 100,
            "took {took}, declined {declined}"
        );
    }
}

/// The fast path takes `json` and agrees with the general path.
fn takes(json: &str) -> Incoming {
    assert!(agree(json).unwrap(), "declined {json}");
    Incoming::from_json_general(json).unwrap()
}

#[test]
fn takes_plain_acks_and_nacks() {
    let Incoming::Ack(a) = takes(SEEDS[0]) else {
        panic!()
    };
    assert_eq!(a.message_id.as_str(), "m-0000000001");
    let Incoming::Ack(a) = takes(SEEDS[1]) else {
        panic!()
    };
    assert_eq!(a.registration_id.as_deref(), Some("APA91c"));
    let Incoming::Ack(a) = takes(SEEDS[2]) else {
        panic!()
    };
    assert_eq!(a.from, None);
    let Incoming::Nack(n) = takes(SEEDS[4]) else {
        panic!()
    };
    assert_eq!(
        (n.error, n.raw_error.as_str()),
        (
            NackCode::InvalidTtl,
            "InvalidJson : INVALID_TTL : Invalid value (-1)"
        )
    );
    let Incoming::Nack(n) = takes(r#"{"message_type":"nack","message_id":""}"#) else {
        panic!()
    };
    assert_eq!(
        (n.error, n.raw_error.as_str()),
        (NackCode::Unknown(String::new()), "")
    );
    let Incoming::Nack(n) = takes(r#"{"message_type":"nack","message_id":"m","error":" NEW "}"#)
    else {
        panic!()
    };
    assert_eq!(n.error, NackCode::Unknown(" NEW ".into()));
    takes(SEEDS[7]);
    takes(SEEDS[11]);
    takes(" \t\r\n{ \"message_type\" : \"ack\" , \"message_id\" : \"<&>\" } \n");
}

#[test]
fn declines_each_form_it_does_not_check() {
    let cases = [
        (
            "escape in a value",
            r#"{"message_type":"ack","message_id":"m\"1"}"#,
        ),
        (
            "unicode escape in a value",
            r#"{"message_type":"\u0061ck","message_id":"m"}"#,
        ),
        (
            "escape in a name",
            r#"{"message\u005ftype":"ack","message_id":"m"}"#,
        ),
        ("number", r#"{"message_type":"ack","message_id":1}"#),
        (
            "null",
            r#"{"message_type":"ack","message_id":"m","from":null}"#,
        ),
        (
            "boolean",
            r#"{"message_type":"ack","message_id":"m","from":true}"#,
        ),
        (
            "object",
            r#"{"message_type":"ack","message_id":"m","from":{}}"#,
        ),
        (
            "array",
            r#"{"message_type":"ack","message_id":"m","from":[]}"#,
        ),
        (
            "duplicate name",
            r#"{"message_type":"ack","message_id":"m","message_id":"n"}"#,
        ),
        (
            "duplicate type",
            r#"{"message_type":"ack","message_type":"ack","message_id":"m"}"#,
        ),
        (
            "unknown name",
            r#"{"message_type":"ack","message_id":"m","x":"y"}"#,
        ),
        (
            "error on an ack",
            r#"{"message_type":"ack","message_id":"m","error":"BAD_ACK"}"#,
        ),
        (
            "description on an ack",
            r#"{"message_type":"ack","message_id":"m","error_description":"d"}"#,
        ),
        (
            "category on an ack",
            r#"{"message_type":"ack","message_id":"m","category":"c"}"#,
        ),
        (
            "registration_id on a nack",
            r#"{"message_type":"nack","message_id":"m","registration_id":"r"}"#,
        ),
        (
            "type in capitals",
            r#"{"message_type":"ACK","message_id":"m"}"#,
        ),
        (
            "receipt",
            r#"{"message_type":"receipt","message_id":"m","from":"f"}"#,
        ),
        (
            "control",
            r#"{"message_type":"control","control_type":"CONNECTION_DRAINING"}"#,
        ),
        ("no type (upstream)", r#"{"message_id":"m","from":"f"}"#),
        ("no message_id", r#"{"message_type":"ack","from":"f"}"#),
        ("empty object", "{}"),
        (
            "trailing comma",
            r#"{"message_type":"ack","message_id":"m",}"#,
        ),
        (
            "missing comma",
            r#"{"message_type":"ack" "message_id":"m"}"#,
        ),
        (
            "text after the object",
            r#"{"message_type":"ack","message_id":"m"}x"#,
        ),
        (
            "two objects",
            r#"{"message_type":"ack","message_id":"m"}{}"#,
        ),
        (
            "byte order mark",
            "\u{feff}{\"message_type\":\"ack\",\"message_id\":\"m\"}",
        ),
        (
            "form feed",
            "{\u{c}\"message_type\":\"ack\",\"message_id\":\"m\"}",
        ),
        (
            "no-break space",
            "{\u{a0}\"message_type\":\"ack\",\"message_id\":\"m\"}",
        ),
        (
            "control character",
            "{\"message_type\":\"ack\",\"message_id\":\"m\u{1}\"}",
        ),
        (
            "unterminated string",
            r#"{"message_type":"ack","message_id":"m}"#,
        ),
        (
            "unclosed object",
            r#"{"message_type":"ack","message_id":"m""#,
        ),
        ("not an object", r#"["ack"]"#),
        ("empty", ""),
    ];
    for (why, json) in cases {
        assert_eq!(IncomingRef::parse(json), None, "{why}: took {json}");
        assert!(!agree(json).unwrap(), "{why}");
    }
}

#[test]
fn every_single_edit_of_an_ack_or_nack_declines_or_agrees() {
    let alphabet = crate::mutation::edit_alphabet();
    let seeds = [
        SEEDS[1],
        r#"{"message_type":"nack","message_id":"m","error":"E","error_description":"d"}"#,
    ];
    let mut took = 0;
    for seed in seeds {
        for input in crate::mutation::single_edits(seed.as_bytes(), &alphabet) {
            if let Ok(json) = std::str::from_utf8(&input) {
                took += usize::from(agree(json).unwrap());
            }
        }
    }
    assert!(took > 3_000, "took {took}");
}
