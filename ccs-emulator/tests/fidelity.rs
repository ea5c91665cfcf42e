//! The emulator answers like the real server (PROTOCOL.md Part 2), case by case, over real
//! TLS: copies of a pending id, `<message>` without `<gcm>`, an empty `to`, acks naming
//! another device (strict and lenient), ill-formed XML, `from` in every answer, the topic
//! payload limit, and the ledger's upstream records.

mod support;

use ccs_emulator::{ConnectionEnd, Emulator, EmulatorConfig};
use ccs_proto::connection::{Anomaly, CloseReason, ConnectionEvent};
use ccs_proto::message::{Ack, Downstream, NackCode, Upstream};
use ccs_proto::xml::write::{self, MessageAttrs};
use serde_json::{Map, Value, json};
use support::{Client, manual_config, within};

fn data(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn gcm_stanza(json: &str) -> Vec<u8> {
    let mut out = Vec::new();
    write::gcm_message(&mut out, &MessageAttrs::default(), json);
    out
}

/// Waits for an ack of a message the client did not send itself (one written raw).
async fn raw_ack(client: &mut Client) -> Ack {
    client
        .wait_for(|e| match e {
            ConnectionEvent::Anomaly(Anomaly::UnknownAck(a)) => Some(a.clone()),
            _ => None,
        })
        .await
}

async fn next_upstream(client: &mut Client) -> Upstream {
    client
        .wait_for(|e| match e {
            ConnectionEvent::Upstream { message, .. } => Some(message.clone()),
            _ => None,
        })
        .await
}

/// Writes a raw client ack.
async fn send_ack(client: &mut Client, to: &str, id: &str) {
    let json = json!({"to": to, "message_id": id, "message_type": "ack"}).to_string();
    client.send_json(None, &json).await;
}

#[tokio::test]
async fn every_copy_of_a_pending_id_is_answered() {
    within(async {
        let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
        let mut client = Client::connect(&emu).await;
        // Both copies in one write: the second arrives while the first is pending.
        let one = gcm_stanza(r#"{"to":"dev","message_id":"dup"}"#);
        client.send_raw(&[one.clone(), one].concat()).await;
        for _ in 0..2 {
            assert_eq!(raw_ack(&mut client).await.message_id.as_str(), "dup");
        }
        let ledger = emu.wait_until(|l| l.total.acked == 2).await;
        assert_eq!(ledger.total.duplicates_pending, 1);
        assert_eq!(ledger.total.downstream_received, 2);
        assert_eq!(ledger.ids["dup"].answers, 2);
        assert!(ledger.unanswered_ids().is_empty());
    })
    .await;
}

#[tokio::test]
async fn copies_of_one_message_get_one_delivery_receipt() {
    within(async {
        let mut config = EmulatorConfig::default();
        config.upstream_after_bind = std::time::Duration::ZERO;
        let emu = Emulator::start(config).await.unwrap();
        let mut client = Client::connect(&emu).await;
        let one =
            gcm_stanza(r#"{"to":"dev","message_id":"r-dup","delivery_receipt_requested":true}"#);
        client.send_raw(&[one.clone(), one].concat()).await;
        for _ in 0..2 {
            assert_eq!(raw_ack(&mut client).await.message_id.as_str(), "r-dup");
        }
        // A later message with a receipt: receipts go out in order, so once its receipt was
        // sent, so was every receipt for r-dup.
        client
            .send_raw(&gcm_stanza(
                r#"{"to":"dev","message_id":"r-next","delivery_receipt_requested":true}"#,
            ))
            .await;
        let ledger = emu
            .wait_until(|l| l.upstream_record("dr2:r-next").is_some())
            .await;
        assert_eq!(
            ledger.total.receipts_sent, 2,
            "one receipt for the two copies of r-dup, one for r-next"
        );
    })
    .await;
}

#[tokio::test]
async fn a_copy_acked_after_a_draining_nack_draws_no_second_receipt() {
    within(async {
        let mut config = EmulatorConfig::default();
        config.upstream_after_bind = std::time::Duration::ZERO;
        let emu = Emulator::start(config).await.unwrap();
        let copy =
            gcm_stanza(r#"{"to":"dev","message_id":"r-dup","delivery_receipt_requested":true}"#);
        let mut first = Client::connect(&emu).await;
        first.send_raw(&copy).await;
        assert_eq!(raw_ack(&mut first).await.message_id.as_str(), "r-dup");
        // Draining: the next copy is nacked CONNECTION_DRAINING (the id's latest answer).
        emu.drain_all();
        emu.wait_until(|l| l.connections.first().is_some_and(|c| c.drained))
            .await;
        first.send_raw(&copy).await;
        emu.wait_until(|l| l.ids["r-dup"].answers == 2).await;
        // A third copy on a new connection is acked: the device had the message already.
        let mut second = Client::connect(&emu).await;
        second.send_raw(&copy).await;
        assert_eq!(raw_ack(&mut second).await.message_id.as_str(), "r-dup");
        second
            .send_raw(&gcm_stanza(
                r#"{"to":"dev","message_id":"r-next","delivery_receipt_requested":true}"#,
            ))
            .await;
        let ledger = emu
            .wait_until(|l| l.upstream_record("dr2:r-next").is_some())
            .await;
        let r = ledger.upstream_record("dr2:r-dup").unwrap();
        assert_eq!(
            r.sent - r.redelivered,
            1,
            "one receipt made for r-dup: {r:?}"
        );
        assert_eq!(ledger.ids["r-dup"].acks, 2);
    })
    .await;
}

#[tokio::test]
async fn message_without_gcm_gets_a_stanza_error() {
    within(async {
        let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
        let mut client = Client::connect(&emu).await;
        client
            .send_raw(br#"<message id="n-1"><body>hello</body></message>"#)
            .await;
        client
            .send_raw(br#"<message id="n-2"><gcm xmlns="urn:other">{"to":"t","message_id":"x"}</gcm></message>"#)
            .await;
        for want in ["n-1", "n-2"] {
            let (id, error) = client
                .wait_for(|e| match e {
                    ConnectionEvent::Anomaly(Anomaly::UnmatchedStanzaError { id, error }) => {
                        Some((id.clone(), error.clone()))
                    }
                    _ => None,
                })
                .await;
            assert_eq!(id.as_deref(), Some(want));
            assert_eq!(error.expect("the error element").condition, "bad-request");
        }
        let ledger = emu.wait_until(|l| l.total.messages_without_gcm == 2).await;
        assert_eq!(ledger.total.stanza_errors, 2);
        // The stream goes on.
        client.send_to("t", "after").await;
        client
            .wait_for(|e| matches!(e, ConnectionEvent::Acked { .. }).then_some(()))
            .await;
    })
    .await;
}

#[tokio::test]
async fn empty_to_is_nacked_bad_registration() {
    within(async {
        let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
        let mut client = Client::connect(&emu).await;
        client
            .send_json(None, r#"{"to":"","message_id":"e-1"}"#)
            .await;
        let nack = client.raw_nack().await;
        assert_eq!(nack.error, NackCode::BadRegistration);
        assert_eq!(nack.from.as_deref(), Some(""));
        let ledger = emu.wait_until(|l| l.total.nacked_total() == 1).await;
        assert_eq!(ledger.total.nacked_with("BAD_REGISTRATION"), 1);
        assert_eq!(ledger.ids["e-1"].to.as_deref(), Some(""));
    })
    .await;
}

#[tokio::test]
async fn ack_naming_another_device_is_refused_and_redelivered() {
    within(async {
        let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
        let mut first = Client::connect_with(&emu, manual_config()).await.0;
        let id = emu.inject_upstream_data("device-A", data(json!({"n": "1"})));
        let message = next_upstream(&mut first).await;
        send_ack(&mut first, "device-B", id.as_str()).await;
        let nack = first.raw_nack().await;
        assert_eq!(nack.error, NackCode::BadAck);
        assert_eq!(nack.message_id, id);
        assert_eq!(nack.from.as_deref(), Some("device-B"));
        let ledger = emu.wait_until(|l| l.total.bad_acks == 1).await;
        assert_eq!(ledger.total.upstream_acked, 0);
        assert_eq!(ledger.unacked_upstream(), vec![id.to_string()]);
        first.vanish();
        emu.wait_until(|l| l.connections_closed == 1).await;

        // Redelivered on the next connection; a right ack counts.
        let mut second = Client::connect_with(&emu, manual_config()).await.0;
        assert_eq!(next_upstream(&mut second).await, message);
        send_ack(&mut second, "device-A", id.as_str()).await;
        let ledger = emu.wait_until(|l| l.total.upstream_acked == 1).await;
        let record = ledger.upstream_record(id.as_str()).unwrap();
        assert_eq!(record.from, "device-A");
        assert!(!record.receipt);
        assert_eq!((record.sent, record.redelivered, record.acks), (2, 1, 1));
        assert_eq!(record.sent_on, vec![1, 2]);
        assert_eq!(record.acked_on, Some(2));
        assert!(ledger.unacked_upstream().is_empty());
        assert_eq!(ledger.total.redelivered, 1);
        assert_eq!(ledger.total.receipts_redelivered, 0);
    })
    .await;
}

#[tokio::test]
async fn lenient_acks_accept_another_device() {
    within(async {
        let mut config = EmulatorConfig::default();
        config.strict_acks = false;
        let emu = Emulator::start(config).await.unwrap();
        let mut client = Client::connect_with(&emu, manual_config()).await.0;
        let id = emu.inject_upstream_data("device-A", data(json!({"n": "1"})));
        next_upstream(&mut client).await;
        send_ack(&mut client, "device-B", id.as_str()).await;
        let ledger = emu.wait_until(|l| l.total.upstream_acked == 1).await;
        assert_eq!(ledger.total.bad_acks, 0);
        assert_eq!(
            ledger.upstream_record(id.as_str()).unwrap().acked_on,
            Some(1)
        );
    })
    .await;
}

#[tokio::test]
async fn raw_ampersand_draws_invalid_xml() {
    within(async {
        let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
        let mut client = Client::connect(&emu).await;
        client
            .send_raw(br#"<message><gcm xmlns="google:mobile:data">{"to":"t","message_id":"a","data":{"k":"b & c"}}</gcm></message>"#)
            .await;
        let closed = client.closed().await;
        let ConnectionEvent::Closed {
            reason: CloseReason::StreamError(e),
            ..
        } = closed
        else {
            panic!("expected a stream error, got {closed:?}")
        };
        assert_eq!(e.condition, "invalid-xml");
        let ledger = emu.wait_until(|l| l.connections_closed == 1).await;
        assert!(matches!(
            ledger.connections[0].end,
            Some(ConnectionEnd::ProtocolError { .. })
        ));
    })
    .await;
}

#[tokio::test]
async fn acks_of_condition_messages_name_from() {
    within(async {
        let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
        let mut client = Client::connect(&emu).await;
        let json = json!({"condition": "'a' in topics", "message_id": "c-1"}).to_string();
        client.send_json(None, &json).await;
        let ack = raw_ack(&mut client).await;
        assert_eq!(ack.message_id.as_str(), "c-1");
        assert_eq!(ack.from.as_deref(), Some("'a' in topics"));
    })
    .await;
}

#[tokio::test]
async fn topic_messages_have_the_smaller_payload_limit() {
    within(async {
        let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
        let mut client = Client::connect(&emu).await;
        // 1 + 2048 bytes: over the topic limit (2048), under the token limit (4096).
        let value = "x".repeat(2048);
        for (to, id) in [("/topics/news", "topic"), ("token", "token")] {
            let json = json!({"to": to, "message_id": id, "data": {"k": value}}).to_string();
            client.send_json(None, &json).await;
        }
        let nack = client.raw_nack().await;
        assert_eq!(nack.message_id.as_str(), "topic");
        assert_eq!(nack.error, NackCode::InvalidJson);
        let description = nack.error_description.unwrap_or_default();
        assert!(
            description.starts_with("InvalidJson: MESSAGE_TOO_BIG : Message too big"),
            "{description}"
        );
        assert!(description.contains("2048"), "{description}");
        let json = json!({"condition": "'a' in topics", "message_id": "cond",
                          "data": {"k": value}})
        .to_string();
        client.send_json(None, &json).await;
        assert_eq!(client.raw_nack().await.message_id.as_str(), "cond");
        let ledger = emu.wait_until(|l| l.total.acked == 1).await;
        assert_eq!(ledger.total.nacked_with("INVALID_JSON"), 2);
        assert!(matches!(
            ledger.answered("token"),
            Some(ccs_emulator::Answer::Acked { .. })
        ));
    })
    .await;
}

#[tokio::test]
async fn receipts_redelivered_are_counted_apart() {
    within(async {
        let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
        let mut first = Client::connect_with(&emu, manual_config()).await.0;
        let msg = Downstream::builder("device-1", "m-1")
            .unwrap()
            .delivery_receipt_requested(true)
            .build();
        first.send(msg).await;
        first
            .wait_for(|e| matches!(e, ConnectionEvent::Receipt { .. }).then_some(()))
            .await;
        first.vanish();
        emu.wait_until(|l| l.connections_closed == 1).await;
        // Auto mode acks the receipt sent again.
        let _second = Client::connect(&emu).await;
        let ledger = emu.wait_until(|l| l.total.receipts_acked == 1).await;
        assert_eq!(ledger.total.receipts_redelivered, 1);
        assert_eq!(ledger.total.redelivered, 0);
        assert_eq!(ledger.ids["m-1"].to.as_deref(), Some("device-1"));
        let record = ledger.upstream_record("dr2:m-1").unwrap();
        assert!(record.receipt);
        assert_eq!(record.from, "gcm.googleapis.com");
        assert_eq!((record.sent, record.redelivered), (2, 1));
        assert!(ledger.unacked_upstream().is_empty());
    })
    .await;
}
