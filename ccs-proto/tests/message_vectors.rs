//! The JSON examples of the 2013 CCS page (shared/seeds/001_*.txt, HTML entities decoded) and
//! of PROTOCOL.md §3, decoded with `ccs_proto::message`.
//!
//! Where the documentation's JSON is not valid JSON (missing commas, `//` comments, trailing
//! commas, `true/false`), the verbatim text must give a clean `JsonError`, and a corrected copy
//! is checked field by field.

use ccs_proto::error::JsonError;
use ccs_proto::message::{
    Ack, AppAck, ClientMessage, Control, ControlType, Downstream, Incoming, MessageId, Nack,
    NackCode, Receipt, ReceiptStatus, RetryClass, TimeToLive, Upstream,
};
use serde_json::{Map, Value, json};

fn incoming(json: &str) -> Incoming {
    match Incoming::from_json(json) {
        Ok(m) => m,
        Err(e) => panic!("{json}\n=> {e}"),
    }
}

fn incoming_err(json: &str) -> JsonError {
    match Incoming::from_json(json) {
        Ok(m) => panic!("{json}\n=> decoded as {m:?}"),
        Err(e) => e,
    }
}

fn client_err(json: &str) -> JsonError {
    match ClientMessage::from_json(json) {
        Ok(m) => panic!("{json}\n=> decoded as {m:?}"),
        Err(e) => e,
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

/// Serialize -> parse gives the same value, and the text is a JSON object.
fn round_trips(m: &Incoming) {
    let text = serde_json::to_string(m).unwrap();
    assert_eq!(&Incoming::from_json(&text).unwrap(), m, "{text}");
}

// ----- seed 001: request format ---------------------------------------------------------------

const SEED_REQUEST: &str = r#"
{
"to":"REGISTRATION_ID", // "to" replaces "registration_ids"
"message_id":"m-1366082849205" // new required field
"data":
{
"hello":"world",
}
"time_to_live":"600",
"delay_while_idle": true/false
}
"#;

#[test]
fn seed_request_verbatim_is_a_clean_error() {
    let e = client_err(SEED_REQUEST);
    assert!(!e.detail.is_empty());
    // The same text is no better as an incoming message.
    incoming_err(SEED_REQUEST);
    assert!(serde_json::from_str::<Downstream>(SEED_REQUEST).is_err());
}

#[test]
fn seed_request_corrected() {
    let text = r#"
    {
      "to":"REGISTRATION_ID",
      "message_id":"m-1366082849205",
      "data": {"hello":"world"},
      "time_to_live":600,
      "delay_while_idle": true
    }"#;
    let ClientMessage::Downstream(d) = ClientMessage::from_json(text).unwrap() else {
        panic!("not a downstream message")
    };
    assert_eq!(d.to().unwrap().as_str(), "REGISTRATION_ID");
    assert_eq!(d.message_id().as_str(), "m-1366082849205");
    assert_eq!(d.data(), Some(&obj(json!({"hello": "world"}))));
    assert_eq!(d.time_to_live(), Some(TimeToLive::new(600).unwrap()));
    assert_eq!(d.delay_while_idle(), Some(true));
    assert_eq!(d.condition(), None);
    assert_eq!(d.collapse_key(), None);
    assert_eq!(d.priority(), None);
    assert_eq!(d.delivery_receipt_requested(), None);
    assert_eq!(d.notification(), None);
    assert!(d.extra().is_empty());

    let built = Downstream::builder("REGISTRATION_ID", "m-1366082849205")
        .unwrap()
        .data(json!({"hello": "world"}))
        .unwrap()
        .time_to_live(600)
        .unwrap()
        .delay_while_idle(true)
        .build();
    assert_eq!(built, d);
}

#[test]
fn seed_request_with_only_the_string_ttl_left_is_refused() {
    // The doc's `"time_to_live":"600"` (a string) in otherwise valid JSON.
    let text = r#"{"to":"REGISTRATION_ID","message_id":"m-1366082849205","data":{"hello":"world"},"time_to_live":"600","delay_while_idle":true}"#;
    let e = client_err(text);
    assert!(e.detail.contains("time_to_live"), "{e}");
    // And `true/false` replaced by a string is a type error naming the field.
    let text = r#"{"to":"R","message_id":"m","delay_while_idle":"true"}"#;
    assert!(client_err(text).detail.contains("delay_while_idle"));
}

// ----- seed 001: ack ---------------------------------------------------------------------------

#[test]
fn seed_ack() {
    let verbatim = r#"
{
"from":"REGID",
"message_id":"m-1366082849205"
"message_type":"ack"
}
"#;
    incoming_err(verbatim);
    let corrected = r#"
{
"from":"REGID",
"message_id":"m-1366082849205",
"message_type":"ack"
}
"#;
    let Incoming::Ack(ack) = incoming(corrected) else {
        panic!("not an ack")
    };
    assert_eq!(ack.from.as_deref(), Some("REGID"));
    assert_eq!(ack.message_id.as_str(), "m-1366082849205");
    assert_eq!(ack.registration_id, None);
    assert!(ack.extra.is_empty());
}

// ----- seed 001: the three nacks -----------------------------------------------------------------

#[test]
fn seed_nack_bad_registration() {
    let verbatim = r#"
{
"error":"BAD_REGISTRATION", // error code
"message_id":"msgId1",
"from":"PA91bHFOtaQGSwupt5l1og",
"message_type":"nack"
}"#;
    incoming_err(verbatim);
    let corrected = r#"
{
"error":"BAD_REGISTRATION",
"message_id":"msgId1",
"from":"PA91bHFOtaQGSwupt5l1og",
"message_type":"nack"
}"#;
    let Incoming::Nack(n) = incoming(corrected) else {
        panic!("not a nack")
    };
    assert_eq!(n.error, NackCode::BadRegistration);
    assert_eq!(n.raw_error, "BAD_REGISTRATION");
    assert_eq!(n.message_id.as_str(), "msgId1");
    assert_eq!(n.from.as_deref(), Some("PA91bHFOtaQGSwupt5l1og"));
    assert_eq!(n.error_description, None);
    assert!(n.extra.is_empty());
    assert_eq!(n.error.retry_class(), RetryClass::Final);
}

#[test]
fn seed_nack_invalid_ttl_composite() {
    // Valid JSON as printed.
    let text = r#"
{
"error":"InvalidJson : INVALID_TTL : Invalid value (-1) for \"time_to_live\": must be between 0 and \"2419200\"\n",
"message_id":"msgId1",
"from":"APA91bHFOtaQGSwupt5l1og",
"message_type":"nack"
}"#;
    let Incoming::Nack(n) = incoming(text) else {
        panic!("not a nack")
    };
    assert_eq!(n.error, NackCode::InvalidTtl);
    assert_eq!(
        n.raw_error,
        "InvalidJson : INVALID_TTL : Invalid value (-1) for \"time_to_live\": must be between 0 and \"2419200\"\n"
    );
    assert_eq!(n.message_id.as_str(), "msgId1");
    assert_eq!(n.from.as_deref(), Some("APA91bHFOtaQGSwupt5l1og"));
    assert!(!n.error.is_retryable());
    // The composite text survives a round trip.
    round_trips(&Incoming::Nack(n.clone()));
    let v: Value = serde_json::to_value(&n).unwrap();
    assert_eq!(v["error"], n.raw_error.as_str());
}

#[test]
fn seed_nack_json_type_error_composite() {
    let text = r#"
{
"error":"InvalidJson : JSON_TYPE_ERROR : Field \"delay_while_idle\" must be a JSON java.lang.Boolean: not-boolean-user-supplied-value\n",
"message_id":"msgId1",
"from":"APA91bHFOtaQGSwupt5l1og",
"message_type":"nack"
}"#;
    let Incoming::Nack(n) = incoming(text) else {
        panic!("not a nack")
    };
    assert_eq!(n.error, NackCode::JsonTypeError);
    assert!(
        n.raw_error
            .starts_with("InvalidJson : JSON_TYPE_ERROR : Field")
    );
    assert_eq!(n.message_id.as_str(), "msgId1");
    assert_eq!(n.from.as_deref(), Some("APA91bHFOtaQGSwupt5l1og"));
}

// ----- seed 001: stanza error payload ------------------------------------------------------------

#[test]
fn seed_stanza_error_payload_is_no_message() {
    // The echoed `{"random": "text"}` of a stanza error is not a CCS message of either side.
    let e = incoming_err(r#"{"random": "text"}"#);
    assert!(e.detail.contains("from"), "{e}");
    let e = client_err(r#"{"random": "text"}"#);
    assert!(e.detail.contains("message_id"), "{e}");
}

// ----- seed 001: upstream and its ack ------------------------------------------------------------

#[test]
fn seed_upstream() {
    let verbatim = r#"
{
"category":"com.example.yourapp", // to know which app sent it
"data":
{
"hello":"world",
},
"message_id":"m-123",
"from":"REGID"
}"#;
    incoming_err(verbatim);
    let corrected = r#"
{
"category":"com.example.yourapp",
"data":
{
"hello":"world"
},
"message_id":"m-123",
"from":"REGID"
}"#;
    let m = incoming(corrected);
    let Incoming::Upstream(u) = &m else {
        panic!("not upstream")
    };
    assert_eq!(u.category.as_deref(), Some("com.example.yourapp"));
    assert_eq!(u.data, obj(json!({"hello": "world"})));
    assert_eq!(u.message_id.as_str(), "m-123");
    assert_eq!(u.from, "REGID");
    assert_eq!(u.time_to_live, None);
    assert!(u.extra.is_empty());

    // The ack the page shows for it.
    let ack = m.ack_for().unwrap();
    assert_eq!(ack.to, "REGID");
    assert_eq!(ack.message_id.as_str(), "m-123");
    assert_eq!(
        serde_json::to_string(&ack).unwrap(),
        r#"{"to":"REGID","message_id":"m-123","message_type":"ack"}"#
    );
}

#[test]
fn seed_ack_for_upstream() {
    let verbatim = r#"
{
"to":"REGID",
"message_id":"m-123"
"message_type":"ack"
}"#;
    client_err(verbatim);
    let corrected = r#"
{
"to":"REGID",
"message_id":"m-123",
"message_type":"ack"
}"#;
    let ClientMessage::Ack(ack) = ClientMessage::from_json(corrected).unwrap() else {
        panic!("not an ack")
    };
    assert_eq!(ack.to, "REGID");
    assert_eq!(ack.message_id.as_str(), "m-123");
    assert_eq!(serde_json::from_str::<AppAck>(corrected).unwrap(), ack);
}

// ----- PROTOCOL.md §3.1: downstream (D14, corrected there) --------------------------------------

#[test]
fn protocol_downstream_d14() {
    let text = r#"
  {
      "to":"REGISTRATION_ID",
      "message_id":"m-1366082849205",
      "data": {"hello":"world"},
      "time_to_live":600,
      "delay_while_idle":true,
      "delivery_receipt_requested":true
  }
  "#;
    let d: Downstream = serde_json::from_str(text).unwrap();
    assert_eq!(d.to().unwrap(), "REGISTRATION_ID");
    assert_eq!(d.message_id(), "m-1366082849205");
    assert_eq!(d.data(), Some(&obj(json!({"hello": "world"}))));
    assert_eq!(d.time_to_live().map(TimeToLive::seconds), Some(600));
    assert_eq!(d.delay_while_idle(), Some(true));
    assert_eq!(d.delivery_receipt_requested(), Some(true));
    let built = Downstream::builder("REGISTRATION_ID", "m-1366082849205")
        .unwrap()
        .data(json!({"hello": "world"}))
        .unwrap()
        .time_to_live(600)
        .unwrap()
        .delay_while_idle(true)
        .delivery_receipt_requested(true)
        .build();
    assert_eq!(built, d);
    assert_eq!(
        serde_json::to_string(&built).unwrap(),
        r#"{"to":"REGISTRATION_ID","message_id":"m-1366082849205","time_to_live":600,"delay_while_idle":true,"delivery_receipt_requested":true,"data":{"hello":"world"}}"#
    );
}

// ----- PROTOCOL.md §3.2: upstream ---------------------------------------------------------------

#[test]
fn protocol_upstream_doc_form() {
    let text = r#"
  {"category":"com.example.yourapp","data":{"hello":"world"},"message_id":"m-123","from":"REGID"}
  "#;
    let Incoming::Upstream(u) = incoming(text) else {
        panic!("not upstream")
    };
    assert_eq!(u.from, "REGID");
    assert_eq!(u.message_id.as_str(), "m-123");
    assert_eq!(u.category.as_deref(), Some("com.example.yourapp"));
    assert_eq!(u.data, obj(json!({"hello": "world"})));
}

#[test]
fn protocol_upstream_observed_with_time_to_live() {
    let text = r#"
    {"data": {"Hello":"World"},
     "time_to_live":10,
     "from":"feQqD9P957k:APA91bH-jE8j6dAohIB5spQrCajDwUsDtNdf3",
     "message_id":"1234567",
     "category":"com.gmail.rajeshkhumanthem.phantom"
     }
     "#;
    let m = incoming(text);
    let Incoming::Upstream(u) = &m else {
        panic!("not upstream")
    };
    assert_eq!(u.data, obj(json!({"Hello": "World"})));
    assert_eq!(u.time_to_live, Some(10));
    assert_eq!(u.from, "feQqD9P957k:APA91bH-jE8j6dAohIB5spQrCajDwUsDtNdf3");
    assert_eq!(u.message_id.as_str(), "1234567");
    assert_eq!(
        u.category.as_deref(),
        Some("com.gmail.rajeshkhumanthem.phantom")
    );
    assert!(u.extra.is_empty());
    assert_eq!(
        m.ack_for(),
        Some(AppAck {
            to: "feQqD9P957k:APA91bH-jE8j6dAohIB5spQrCajDwUsDtNdf3".into(),
            message_id: MessageId::new("1234567").unwrap(),
        })
    );
    round_trips(&m);
}

// ----- PROTOCOL.md §3.3 / §3.4: acks ------------------------------------------------------------

#[test]
fn protocol_app_ack() {
    let text = r#"{"to":"REGID","message_id":"m-123","message_type":"ack"}"#;
    let ClientMessage::Ack(ack) = ClientMessage::from_json(text).unwrap() else {
        panic!("not an ack")
    };
    assert_eq!(serde_json::to_string(&ack).unwrap(), text);
}

#[test]
fn protocol_ccs_ack() {
    let text = r#"
  {"from":"REGID","message_id":"m-1366082849205","message_type":"ack"}
  "#;
    let m = incoming(text);
    let Incoming::Ack(ack) = &m else {
        panic!("not an ack")
    };
    assert_eq!(ack.from.as_deref(), Some("REGID"));
    assert_eq!(ack.message_id.as_str(), "m-1366082849205");
    assert_eq!(m.ack_for(), None);
}

#[test]
fn ack_with_canonical_registration_id() {
    let text = r#"{"message_type":"ack","from":"OLD","message_id":"m-1","registration_id":"NEW"}"#;
    let Incoming::Ack(ack) = incoming(text) else {
        panic!("not an ack")
    };
    assert_eq!(ack.registration_id.as_deref(), Some("NEW"));
}

// ----- PROTOCOL.md §3.5: nacks -------------------------------------------------------------------

#[test]
fn protocol_nacks_2013() {
    let bad_reg = r#"
  {"error":"BAD_REGISTRATION","message_id":"msgId1","from":"PA91bHFOtaQGSwupt5l1og","message_type":"nack"}
  "#;
    let Incoming::Nack(n) = incoming(bad_reg) else {
        panic!("not a nack")
    };
    assert_eq!(n.error, NackCode::BadRegistration);
    assert_eq!(n.from.as_deref(), Some("PA91bHFOtaQGSwupt5l1og"));

    let ttl = r#"
  {"error":"InvalidJson : INVALID_TTL : Invalid value (-1) for \"time_to_live\": must be between 0 and \"2419200\"\n",
   "message_id":"msgId1","from":"APA91bHFOtaQGSwupt5l1og","message_type":"nack"}
  "#;
    let Incoming::Nack(n) = incoming(ttl) else {
        panic!("not a nack")
    };
    assert_eq!(n.error, NackCode::InvalidTtl);
    assert!(n.raw_error.starts_with("InvalidJson : INVALID_TTL"));
}

#[test]
fn protocol_nacks_2014() {
    let bad_reg = r#"
  {"message_type":"nack","message_id":"msgId1","from":"SomeInvalidRegistrationId",
   "error":"BAD_REGISTRATION","error_description":"Invalid token on 'to' field: SomeInvalidRegistrationId"}
  "#;
    let Incoming::Nack(n) = incoming(bad_reg) else {
        panic!("not a nack")
    };
    assert_eq!(n.message_id.as_str(), "msgId1");
    assert_eq!(n.from.as_deref(), Some("SomeInvalidRegistrationId"));
    assert_eq!(n.error, NackCode::BadRegistration);
    assert_eq!(n.raw_error, "BAD_REGISTRATION");
    assert_eq!(
        n.error_description.as_deref(),
        Some("Invalid token on 'to' field: SomeInvalidRegistrationId")
    );

    let invalid_json = r#"
 {"message_type":"nack","message_id":"msgId1","from":"APA91bHFOtaQGSwupt5l1og",
  "error":"INVALID_JSON","error_description":"InvalidJson: JSON_TYPE_ERROR : Field \"time_to_live\" must be a JSON java.lang.Number: abc"}
 "#;
    let Incoming::Nack(n) = incoming(invalid_json) else {
        panic!("not a nack")
    };
    assert_eq!(n.error, NackCode::InvalidJson);
    assert_eq!(n.raw_error, "INVALID_JSON");
    assert_eq!(n.from.as_deref(), Some("APA91bHFOtaQGSwupt5l1og"));
    assert_eq!(
        n.error_description.as_deref(),
        Some(
            "InvalidJson: JSON_TYPE_ERROR : Field \"time_to_live\" must be a JSON java.lang.Number: abc"
        )
    );
    assert_eq!(n.error.retry_class(), RetryClass::Final);
}

#[test]
fn protocol_nack_device_message_rate_exceeded() {
    let text = r#"
  {"message_type":"nack","message_id":"msgId1","from":"REGID",
   "error":"DEVICE_MESSAGE_RATE_EXCEEDED","error_description":"Downstream message rate exceeded for this registration id"}
  "#;
    let Incoming::Nack(n) = incoming(text) else {
        panic!("not a nack")
    };
    assert_eq!(n.error, NackCode::DeviceMessageRateExceeded);
    assert_eq!(n.from.as_deref(), Some("REGID"));
    assert_eq!(n.message_id.as_str(), "msgId1");
    assert_eq!(
        n.error_description.as_deref(),
        Some("Downstream message rate exceeded for this registration id")
    );
    assert_eq!(n.error.retry_class(), RetryClass::RateLimited);
    assert!(!n.error.is_retryable());
}

#[test]
fn protocol_nack_gimmm_empty_description() {
    let text = r#"
        {   "message_type":"nack", "from":"eQq", "message_id":"800001", "error":"BAD_REGISTRATION", "error_description":"" }
        "#;
    let m = incoming(text);
    let Incoming::Nack(n) = &m else {
        panic!("not a nack")
    };
    assert_eq!(n.from.as_deref(), Some("eQq"));
    assert_eq!(n.message_id.as_str(), "800001");
    assert_eq!(n.error, NackCode::BadRegistration);
    assert_eq!(n.error_description.as_deref(), Some(""));
    assert_eq!(m.ack_for(), None);
    round_trips(&m);
}

#[test]
fn nack_connection_draining() {
    let text =
        r#"{"message_type":"nack","message_id":"m-9","from":"R","error":"CONNECTION_DRAINING"}"#;
    let Incoming::Nack(n) = incoming(text) else {
        panic!("not a nack")
    };
    assert_eq!(n.error, NackCode::ConnectionDraining);
    assert_eq!(n.error.retry_class(), RetryClass::OtherConnection);
    assert!(n.error.is_retryable());
}

// ----- PROTOCOL.md §3.6: control -----------------------------------------------------------------

#[test]
fn protocol_control_connection_draining() {
    let verbatim = r#"
  {
    "message_type":"control"
    "control_type":"CONNECTION_DRAINING"
  }
  "#;
    incoming_err(verbatim);
    let corrected = r#"
  {
    "message_type":"control",
    "control_type":"CONNECTION_DRAINING"
  }
  "#;
    let m = incoming(corrected);
    assert_eq!(m, Incoming::Control(Control::connection_draining()));
    let Incoming::Control(c) = &m else {
        panic!("not control")
    };
    assert_eq!(c.control_type, ControlType::ConnectionDraining);
    assert!(c.extra.is_empty());
    assert_eq!(m.message_id(), None);
    assert_eq!(m.ack_for(), None);
    round_trips(&m);
}

// ----- PROTOCOL.md §3.7: receipts ----------------------------------------------------------------

const D14_RECEIPT: &str = r#"
  {
      "category":"com.example.yourapp",
      "data":
      {
         "message_status":"MESSAGE_SENT_TO_DEVICE",
         "original_message_id":"m-1366082849205",
         "device_registration_id": "REGISTRATION_ID"
      },
      "message_id":"dr2:m-1366082849205",
      "message_type":"receipt",
      "from":"gcm.googleapis.com"
  }
  "#;

#[test]
fn protocol_receipt_d14() {
    let m = incoming(D14_RECEIPT);
    let Incoming::Receipt(r) = &m else {
        panic!("not a receipt")
    };
    assert_eq!(r.category.as_deref(), Some("com.example.yourapp"));
    assert_eq!(r.status, ReceiptStatus::MessageSentToDevice);
    assert_eq!(
        r.original_message_id.as_ref().map(MessageId::as_str),
        Some("m-1366082849205")
    );
    assert_eq!(r.device_registration_id.as_deref(), Some("REGISTRATION_ID"));
    assert_eq!(r.sent_timestamp, None);
    assert_eq!(r.message_id.as_str(), "dr2:m-1366082849205");
    assert_eq!(r.from, "gcm.googleapis.com");
    assert_eq!(r.data.len(), 3);
    assert!(r.extra.is_empty());
    // Acked with its dr2: id verbatim, to its `from`.
    assert_eq!(
        serde_json::to_string(&m.ack_for().unwrap()).unwrap(),
        r#"{"to":"gcm.googleapis.com","message_id":"dr2:m-1366082849205","message_type":"ack"}"#
    );
    round_trips(&m);
}

#[test]
fn protocol_receipt_d14_with_typographic_quotes_is_a_clean_error() {
    // The doc printed some quotes as “ ”; PROTOCOL.md gives the corrected form above.
    let typographic = D14_RECEIPT.replace("\"message_status\"", "“message_status”");
    incoming_err(&typographic);
}

#[test]
fn protocol_receipt_observed_2017() {
    let text = r#"{"category":"com.gmail.rajeshkhumanthem.seabus",
 "data":{"device_registration_id":"feQxxxxxxxa","message_sent_timestamp":"1498801519251",
         "message_status":"MESSAGE_SENT_TO_DEVICE","original_message_id":"39"},
 "from":"gcm.googleapis.com","message_id":"dr2:39","message_type":"receipt","time_to_live":0}"#;
    let m = incoming(text);
    let Incoming::Receipt(r) = &m else {
        panic!("not a receipt")
    };
    assert_eq!(
        r.category.as_deref(),
        Some("com.gmail.rajeshkhumanthem.seabus")
    );
    assert_eq!(r.device_registration_id.as_deref(), Some("feQxxxxxxxa"));
    assert_eq!(r.sent_timestamp, Some(1_498_801_519_251));
    assert_eq!(r.status, ReceiptStatus::MessageSentToDevice);
    assert_eq!(r.original_message_id.as_ref().unwrap().as_str(), "39");
    assert_eq!(r.from, "gcm.googleapis.com");
    assert_eq!(r.message_id.as_str(), "dr2:39");
    assert_eq!(r.data["message_sent_timestamp"], "1498801519251");
    assert_eq!(r.extra.get("time_to_live"), Some(&json!(0)));
    assert_eq!(r.extra.len(), 1);
    assert_eq!(
        m.ack_for(),
        Some(AppAck {
            to: "gcm.googleapis.com".into(),
            message_id: MessageId::new("dr2:39").unwrap(),
        })
    );
    round_trips(&m);
    // The emulator's constructor gives the same receipt, apart from category and extra.
    let mut built = Receipt::sent_to_device(
        &MessageId::new("39").unwrap(),
        "feQxxxxxxxa",
        1_498_801_519_251,
    );
    built.category = r.category.clone();
    built.extra = r.extra.clone();
    assert_eq!(&built, r);
}

#[test]
fn receipt_timestamp_as_number() {
    let text = r#"{"message_type":"receipt","from":"gcm.googleapis.com","message_id":"dr2:1",
        "data":{"message_status":"MESSAGE_SENT_TO_DEVICE","message_sent_timestamp":1498801519251}}"#;
    let m = incoming(text);
    let Incoming::Receipt(r) = &m else {
        panic!("not a receipt")
    };
    assert_eq!(r.sent_timestamp, Some(1_498_801_519_251));
    assert_eq!(r.original_message_id, None);
    round_trips(&m);
}

#[test]
fn receipt_odd_fields_are_kept_and_the_receipt_acked() {
    // These were errors before the leniency rule (see the `message` module docs): a receipt
    // with a `from` and a `message_id` is always decoded, so that it is acked.
    let cases = [
        (
            r#"{"message_type":"receipt","from":"g","message_id":"dr2:1","data":{}}"#,
            "data.message_status",
        ),
        (
            r#"{"message_type":"receipt","from":"g","message_id":"dr2:1"}"#,
            "data.message_status",
        ),
        (
            r#"{"message_type":"receipt","from":"g","message_id":"dr2:1","data":{"message_status":7}}"#,
            "data.message_status",
        ),
        (
            r#"{"message_type":"receipt","from":"g","message_id":"dr2:1","data":{"message_status":"S","message_sent_timestamp":"12a"}}"#,
            "data.message_sent_timestamp",
        ),
        (
            r#"{"message_type":"receipt","from":"g","message_id":"dr2:1","data":{"message_status":"S","message_sent_timestamp":-5}}"#,
            "data.message_sent_timestamp",
        ),
        (
            r#"{"message_type":"receipt","from":"g","message_id":"dr2:1","data":{"message_status":"S","original_message_id":39}}"#,
            "data.original_message_id",
        ),
        (
            r#"{"message_type":"receipt","from":"g","message_id":"dr2:1","data":"x"}"#,
            "data",
        ),
    ];
    for (text, field) in cases {
        let m = incoming(text);
        let Incoming::Receipt(r) = &m else {
            panic!("{text}: not a receipt")
        };
        let original = obj(serde_json::from_str(text).unwrap());
        // The odd value is kept as received: in `data`, or `data` itself in `extra`.
        let kept = match field.strip_prefix("data.") {
            Some(sub) => r.data.get(sub) == original.get("data").and_then(|d| d.get(sub)),
            None => r.extra.get(field) == original.get(field),
        };
        assert!(kept, "{text}: {r:?}");
        assert_eq!(m.ack_for().unwrap().message_id.as_str(), "dr2:1");
        round_trips(&m);
    }
    let e = incoming_err(
        r#"{"message_type":"receipt","message_id":"dr2:1","data":{"message_status":"S"}}"#,
    );
    assert!(e.detail.contains("`from`"), "{e}");
}

#[test]
fn unknown_receipt_status_is_kept() {
    let text = r#"{"message_type":"receipt","from":"g","message_id":"dr2:1","data":{"message_status":"MESSAGE_READ"}}"#;
    let Incoming::Receipt(r) = incoming(text) else {
        panic!("not a receipt")
    };
    assert_eq!(r.status, ReceiptStatus::Other("MESSAGE_READ".into()));
    assert_eq!(r.status.as_str(), "MESSAGE_READ");
}

// ----- unknowns, extras, required fields ---------------------------------------------------------

#[test]
fn unknown_message_type_is_kept() {
    let text = r#"{"message_type":"presence_update","message_id":"p-1","from":7,"data":[1,2],"x":{"y":null}}"#;
    let m = incoming(text);
    let Incoming::Unknown { message_type, json } = &m else {
        panic!("not unknown")
    };
    assert_eq!(message_type, "presence_update");
    assert_eq!(
        json,
        &obj(json!({"message_id": "p-1", "from": 7, "data": [1, 2], "x": {"y": null}}))
    );
    assert_eq!(m.ack_for(), None);
    assert_eq!(m.message_id(), None);
    round_trips(&m);
}

#[test]
fn unknown_control_type_is_kept() {
    let text = r#"{"message_type":"control","control_type":"SLOW_DOWN","seconds":5}"#;
    let m = incoming(text);
    let Incoming::Control(c) = &m else {
        panic!("not control")
    };
    assert_eq!(c.control_type, ControlType::Unknown("SLOW_DOWN".into()));
    assert_eq!(c.control_type.as_str(), "SLOW_DOWN");
    assert_eq!(c.extra.get("seconds"), Some(&json!(5)));
    assert_eq!(m.ack_for(), None);
    round_trips(&m);
}

#[test]
fn unknown_nack_code_is_kept() {
    let text = r#"{"message_type":"nack","message_id":"m","error":"INVALID_REQUEST"}"#;
    let m = incoming(text);
    let Incoming::Nack(n) = &m else {
        panic!("not a nack")
    };
    assert_eq!(n.error, NackCode::Unknown("INVALID_REQUEST".into()));
    assert_eq!(n.error.as_str(), "INVALID_REQUEST");
    assert_eq!(n.error.retry_class(), RetryClass::Backoff);
    assert_eq!(n.from, None);
    round_trips(&m);
}

#[test]
fn nack_without_error_is_an_unknown_code() {
    let m = incoming(r#"{"message_type":"nack","message_id":"m"}"#);
    let Incoming::Nack(n) = &m else {
        panic!("not a nack")
    };
    assert_eq!(n.error, NackCode::Unknown(String::new()));
    assert_eq!(n.raw_error, "");
    assert_eq!(n.error.retry_class(), RetryClass::Backoff);
}

#[test]
fn extra_fields_are_kept_on_every_kind() {
    let cases = [
        r#"{"from":"R","message_id":"u","data":{},"new_field":[true],"error":"x"}"#,
        r#"{"message_type":"ack","message_id":"a","new_field":1.5,"category":"c"}"#,
        r#"{"message_type":"nack","message_id":"n","error":"BAD_ACK","new_field":null,"data":{"k":"v"}}"#,
        r#"{"message_type":"receipt","from":"g","message_id":"dr2:r","data":{"message_status":"S","more":1},"new_field":"s","registration_id":"x"}"#,
        r#"{"message_type":"control","control_type":"CONNECTION_DRAINING","new_field":-3,"message_id":"c"}"#,
    ];
    for text in cases {
        let m = incoming(text);
        let extra = match &m {
            Incoming::Upstream(Upstream { extra, .. })
            | Incoming::Ack(Ack { extra, .. })
            | Incoming::Nack(Nack { extra, .. })
            | Incoming::Receipt(Receipt { extra, .. })
            | Incoming::Control(Control { extra, .. }) => extra,
            Incoming::Unknown { .. } => panic!("unknown"),
        };
        assert!(extra.contains_key("new_field"), "{text}: {m:?}");
        // Known names that this kind does not read are kept as well.
        assert_eq!(extra.len(), 2, "{text}: {m:?}");
        round_trips(&m);
        // Nothing is lost: the re-encoded object equals the original one.
        let original: Value = serde_json::from_str(text).unwrap();
        let again = serde_json::to_value(&m).unwrap();
        let mut again = obj(again);
        let mut original = obj(original);
        // Upstream always writes `data`; everything else is identical.
        if !original.contains_key("data") {
            again.remove("data");
        }
        original.remove("message_type");
        again.remove("message_type");
        assert_eq!(again, original, "{text}");
    }
}

#[test]
fn missing_message_id_is_a_clean_error() {
    for text in [
        r#"{"from":"R","data":{}}"#,
        r#"{"message_type":"ack","from":"R"}"#,
        r#"{"message_type":"nack","from":"R","error":"BAD_ACK"}"#,
        r#"{"message_type":"receipt","from":"g","data":{"message_status":"S"}}"#,
    ] {
        let e = incoming_err(text);
        assert!(
            e.detail.contains("missing field `message_id`"),
            "{text}: {e}"
        );
    }
    for text in [r#"{"to":"R"}"#, r#"{"to":"R","message_type":"ack"}"#] {
        let e = client_err(text);
        assert!(e.detail.contains("message_id"), "{text}: {e}");
    }
}

#[test]
fn control_without_message_id_is_valid() {
    let m = incoming(r#"{"message_type":"control","control_type":"CONNECTION_DRAINING"}"#);
    assert!(matches!(m, Incoming::Control(_)));
    let e = incoming_err(r#"{"message_type":"control"}"#);
    assert!(e.detail.contains("control_type"), "{e}");
}

#[test]
fn wrong_types_name_the_field() {
    // Only the fields a message cannot do without; optional fields of another type are kept
    // in `extra` (message_lenient.rs).
    let cases = [
        (r#"{"message_type":"ack","message_id":5}"#, "message_id"),
        (r#"{"from":null,"message_id":"m"}"#, "from"),
        (r#"{"message_type":7,"message_id":"m"}"#, "message_type"),
        (
            r#"{"message_type":"control","control_type":false}"#,
            "control_type",
        ),
    ];
    for (text, field) in cases {
        let e = incoming_err(text);
        assert!(e.detail.contains(&format!("`{field}`")), "{text}: {e}");
    }
}

#[test]
fn optional_fields_of_another_type_are_kept_in_extra() {
    // These were errors before the leniency rule (see the `message` module docs).
    let cases = [
        (
            r#"{"message_type":"ack","message_id":"m","from":true}"#,
            "from",
        ),
        (
            r#"{"message_type":"ack","message_id":"m","registration_id":[]}"#,
            "registration_id",
        ),
        (
            r#"{"message_type":"nack","message_id":"m","error":404}"#,
            "error",
        ),
        (
            r#"{"message_type":"nack","message_id":"m","error":"X","error_description":{}}"#,
            "error_description",
        ),
        (r#"{"from":"R","message_id":"m","data":"hello"}"#, "data"),
        (
            r#"{"from":"R","message_id":"m","time_to_live":-1}"#,
            "time_to_live",
        ),
        (r#"{"from":"R","message_id":"m","category":1}"#, "category"),
    ];
    for (text, field) in cases {
        let m = incoming(text);
        let extra = match &m {
            Incoming::Upstream(Upstream { extra, .. })
            | Incoming::Ack(Ack { extra, .. })
            | Incoming::Nack(Nack { extra, .. }) => extra,
            other => panic!("{text}: {other:?}"),
        };
        let original = obj(serde_json::from_str(text).unwrap());
        assert_eq!(extra.get(field), original.get(field), "{text}");
        round_trips(&m);
    }
    // A string of digits is read as the number it spells.
    let Incoming::Upstream(u) = incoming(r#"{"from":"R","message_id":"m","time_to_live":"10"}"#)
    else {
        panic!("not upstream")
    };
    assert_eq!(u.time_to_live, Some(10));
    assert!(u.extra.is_empty());
}

#[test]
fn optional_nulls_are_absent() {
    let m =
        incoming(r#"{"message_type":"ack","message_id":"m","from":null,"registration_id":null}"#);
    assert_eq!(m, Incoming::Ack(Ack::new(MessageId::new("m").unwrap())));
    let m = incoming(r#"{"message_type":null,"from":"R","message_id":"m"}"#);
    assert!(matches!(m, Incoming::Upstream(_)));
}

#[test]
fn duplicate_fields_and_non_objects_are_errors() {
    incoming_err(r#"{"message_type":"ack","message_id":"a","message_id":"b"}"#);
    incoming_err(r#"["message_type","ack"]"#);
    incoming_err(r#""ack""#);
    incoming_err("");
    incoming_err("{}");
    incoming_err(r#"{"message_type":"ack","message_id":"m"} trailing"#);
    client_err(r#"{"to":"a","to":"b","message_id":"m"}"#);
}

#[test]
fn ack_for_never_acks_acks_nacks_controls_or_unknowns() {
    let never = [
        r#"{"message_type":"ack","message_id":"m","from":"R"}"#,
        r#"{"message_type":"nack","message_id":"m","from":"R","error":"BAD_ACK"}"#,
        r#"{"message_type":"control","control_type":"CONNECTION_DRAINING"}"#,
        r#"{"message_type":"control","control_type":"OTHER","message_id":"m","from":"R"}"#,
        r#"{"message_type":"something","message_id":"m","from":"R"}"#,
        r#"{"message_type":"","message_id":"m","from":"R"}"#,
    ];
    for text in never {
        assert_eq!(incoming(text).ack_for(), None, "{text}");
    }
    let always = [
        r#"{"message_id":"m","from":"R"}"#,
        r#"{"message_type":"receipt","message_id":"dr2:m","from":"gcm.googleapis.com","data":{"message_status":"MESSAGE_SENT_TO_DEVICE"}}"#,
    ];
    for text in always {
        assert!(incoming(text).ack_for().is_some(), "{text}");
    }
}

// ----- client messages (server role) -------------------------------------------------------------

#[test]
fn client_message_dispatch() {
    let e = client_err(r#"{"to":"R","message_id":"m","message_type":"nack","error":"X"}"#);
    assert!(e.detail.contains("nack"), "{e}");
    let e = client_err(r#"{"to":"R","message_id":"m","message_type":"receipt"}"#);
    assert!(e.detail.contains("receipt"), "{e}");
    let e = client_err(r#"{"message_id":"m","message_type":"ack"}"#);
    assert!(e.detail.contains("`to`"), "{e}");
    // Downstream decoding refuses a message_type; ack decoding requires "ack".
    assert!(
        serde_json::from_str::<Downstream>(r#"{"to":"R","message_id":"m","message_type":"ack"}"#)
            .is_err()
    );
    assert!(serde_json::from_str::<AppAck>(r#"{"to":"R","message_id":"m"}"#).is_err());
    // No `to` and no `condition`: decoded, the server judges it.
    let ClientMessage::Downstream(d) = ClientMessage::from_json(r#"{"message_id":"m"}"#).unwrap()
    else {
        panic!("not downstream")
    };
    assert_eq!(d.to(), None);
}

#[test]
fn client_downstream_is_strict_on_types() {
    let cases = [
        (
            r#"{"to":"R","message_id":"m","time_to_live":2419201}"#,
            "time_to_live",
        ),
        (
            r#"{"to":"R","message_id":"m","time_to_live":-1}"#,
            "time_to_live",
        ),
        (
            r#"{"to":"R","message_id":"m","time_to_live":"600"}"#,
            "time_to_live",
        ),
        (
            r#"{"to":"R","message_id":"m","time_to_live":1.5}"#,
            "time_to_live",
        ),
        (
            r#"{"to":"R","message_id":"m","time_to_live":null}"#,
            "time_to_live",
        ),
        (r#"{"to":"R","message_id":"m","dry_run":1}"#, "dry_run"),
        (
            r#"{"to":"R","message_id":"m","content_available":"true"}"#,
            "content_available",
        ),
        (
            r#"{"to":"R","message_id":"m","mutable_content":null}"#,
            "mutable_content",
        ),
        (
            r#"{"to":"R","message_id":"m","delivery_receipt_requested":0}"#,
            "delivery_receipt_requested",
        ),
        (r#"{"to":"R","message_id":"m","data":[]}"#, "data"),
        (r#"{"to":"R","message_id":"m","data":"x"}"#, "data"),
        (
            r#"{"to":"R","message_id":"m","notification":"x"}"#,
            "notification",
        ),
        (
            r#"{"to":"R","message_id":"m","notification":{"title":1}}"#,
            "notification.title",
        ),
        (
            r#"{"to":"R","message_id":"m","notification":{"body_loc_args":"[\"a\"]"}}"#,
            "notification.body_loc_args",
        ),
        (
            r#"{"to":"R","message_id":"m","notification":{"body_loc_args":[1]}}"#,
            "notification.body_loc_args",
        ),
        (r#"{"to":"R","message_id":"m","priority":10}"#, "priority"),
        (r#"{"to":5,"message_id":"m"}"#, "to"),
        (r#"{"to":"R","message_id":5}"#, "message_id"),
        (
            r#"{"to":"R","message_id":"m","collapse_key":false}"#,
            "collapse_key",
        ),
        (r#"{"condition":[],"message_id":"m"}"#, "condition"),
    ];
    for (text, field) in cases {
        let e = client_err(text);
        assert!(e.detail.contains(&format!("`{field}`")), "{text}: {e}");
    }
}

// ----- TTL ---------------------------------------------------------------------------------------

#[test]
fn ttl_zero_is_not_unset() {
    let zero = Downstream::builder("R", "m")
        .unwrap()
        .time_to_live(0)
        .unwrap()
        .build();
    let unset = Downstream::builder("R", "m").unwrap().build();
    assert_eq!(zero.time_to_live(), Some(TimeToLive::ZERO));
    assert_eq!(unset.time_to_live(), None);
    assert_ne!(zero, unset);
    let zero_json = serde_json::to_string(&zero).unwrap();
    let unset_json = serde_json::to_string(&unset).unwrap();
    assert_eq!(zero_json, r#"{"to":"R","message_id":"m","time_to_live":0}"#);
    assert_eq!(unset_json, r#"{"to":"R","message_id":"m"}"#);
    assert_eq!(
        serde_json::from_str::<Downstream>(&zero_json).unwrap(),
        zero
    );
    assert_eq!(
        serde_json::from_str::<Downstream>(&unset_json).unwrap(),
        unset
    );
}

#[test]
fn ttl_limits() {
    let max = Downstream::builder("R", "m")
        .unwrap()
        .time_to_live(2_419_200)
        .unwrap()
        .build();
    assert_eq!(max.time_to_live(), Some(TimeToLive::MAX));
    let text = serde_json::to_string(&max).unwrap();
    assert_eq!(serde_json::from_str::<Downstream>(&text).unwrap(), max);
    let e = Downstream::builder("R", "m")
        .unwrap()
        .time_to_live(2_419_201)
        .unwrap_err();
    assert_eq!(
        e,
        ccs_proto::error::UsageError::TimeToLiveOutOfRange { seconds: 2_419_201 }
    );
    let e = client_err(r#"{"to":"R","message_id":"m","time_to_live":2419201}"#);
    assert!(e.detail.contains("0..=2419200"), "{e}");
}

// ----- the crate example (lib.rs) uses these calls ----------------------------------------------

#[test]
fn crate_example_calls() {
    let msg = Downstream::builder("REGISTRATION_ID", "m-1")
        .unwrap()
        .data(json!({"hello": "world"}))
        .unwrap()
        .time_to_live(600)
        .unwrap()
        .build();
    assert_eq!(msg.message_id().as_str(), "m-1");
    let Incoming::Ack(ack) = Incoming::from_json(
        r#"{"message_type":"ack","message_id":"m-1","from":"REGISTRATION_ID"}"#,
    )
    .unwrap() else {
        panic!("not an ack")
    };
    assert_eq!(ack.message_id.as_str(), "m-1");
}
