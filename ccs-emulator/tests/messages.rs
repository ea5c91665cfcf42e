//! Handshake, acks, canonical ids, every nack case, the stanza error, authentication failure,
//! over real TLS on loopback.

mod support;

use ccs_emulator::{Answer, ConnectionEnd, Emulator, EmulatorConfig};
use ccs_proto::connection::{Anomaly, CloseReason, ConnectionEvent};
use ccs_proto::credentials::ServerKey;
use ccs_proto::message::{Downstream, NackCode};
use support::{Client, client_config, contains, within};

#[tokio::test]
async fn handshake_over_tls_binds_a_jid() {
    within(async {
        let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
        let (mut client, jid) = Client::connect_with(&emu, client_config()).await;
        assert!(jid.starts_with("123456789012@gcm.googleapis.com/"), "{jid}");
        // Stream header and SASL features as CCS sent them.
        assert!(contains(&client.transcript, "<mechanism>PLAIN</mechanism>"));
        assert!(contains(
            &client.transcript,
            "<success xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"/>"
        ));
        let ledger = emu
            .wait_until(|l| l.connections.first().is_some_and(|c| c.jid.is_some()))
            .await;
        assert_eq!(ledger.connections[0].jid.as_deref(), Some(jid.as_str()));
        assert_eq!(ledger.connections_opened, 1);
        assert_eq!(emu.live_connections(), 1);

        client.conn.close(
            tokio::time::Instant::now().into_std(),
            tokio::time::Instant::now().into_std(),
        );
        let closed = client.closed().await;
        assert!(matches!(
            closed,
            ConnectionEvent::Closed {
                reason: CloseReason::Local,
                ..
            }
        ));
        let ledger = emu.wait_until(|l| l.connections_closed == 1).await;
        assert_eq!(ledger.connections[0].end, Some(ConnectionEnd::ClientClosed));
        assert_eq!(ledger.total.auth_failures, 0);
        assert!(ledger.total.bytes_in > 0 && ledger.total.bytes_out > 0);
    })
    .await;
}

#[tokio::test]
async fn downstream_is_acked_and_recorded() {
    within(async {
        let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
        let mut client = Client::connect(&emu).await;
        client.send_to("token-1", "m-1").await;
        let (id, canonical) = client
            .wait_for(|e| match e {
                ConnectionEvent::Acked {
                    message,
                    canonical_registration_id,
                } => Some((
                    message.message_id().to_string(),
                    canonical_registration_id.clone(),
                )),
                _ => None,
            })
            .await;
        assert_eq!(id, "m-1");
        assert_eq!(canonical, None);
        let ledger = emu.wait_until(|l| l.total.acked == 1).await;
        assert_eq!(ledger.total.downstream_received, 1);
        assert_eq!(ledger.total.unique_ids, 1);
        assert_eq!(
            ledger.answered("m-1"),
            Some(Answer::Acked {
                registration_id: None
            })
        );
        assert!(ledger.unanswered_ids().is_empty());
    })
    .await;
}

#[tokio::test]
async fn canonical_registration_id_rides_on_the_ack() {
    within(async {
        let mut config = EmulatorConfig::default();
        config
            .canonical
            .insert("old-token".into(), "new-token".into());
        let emu = Emulator::start(config).await.unwrap();
        let mut client = Client::connect(&emu).await;
        client.send_to("old-token", "m-1").await;
        let canonical = client
            .wait_for(|e| match e {
                ConnectionEvent::Acked {
                    canonical_registration_id,
                    ..
                } => Some(canonical_registration_id.clone()),
                _ => None,
            })
            .await;
        assert_eq!(canonical.as_deref(), Some("new-token"));
        let ledger = emu.wait_until(|l| l.total.acked == 1).await;
        assert_eq!(ledger.total.canonical_ids, 1);
    })
    .await;
}

#[tokio::test]
async fn token_sets_are_nacked_with_their_codes() {
    within(async {
        let mut config = EmulatorConfig::default();
        config.unregistered.insert("gone".into());
        config.bad_registrations.insert("garbage".into());
        let emu = Emulator::start(config).await.unwrap();
        let mut client = Client::connect(&emu).await;
        client.send_to("gone", "m-1").await;
        client.send_to("garbage", "m-2").await;
        let mut codes = Vec::new();
        while codes.len() < 2 {
            let nack = client
                .wait_for(|e| match e {
                    ConnectionEvent::Nacked { nack, .. } => Some(nack.clone()),
                    _ => None,
                })
                .await;
            codes.push((
                nack.message_id.to_string(),
                nack.error,
                nack.error_description,
            ));
        }
        codes.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(codes[0].1, NackCode::DeviceUnregistered);
        assert_eq!(codes[1].1, NackCode::BadRegistration);
        assert_eq!(
            codes[1].2.as_deref(),
            Some("Invalid token on 'to' field: garbage")
        );
        let ledger = emu.wait_until(|l| l.total.nacked_total() == 2).await;
        assert_eq!(ledger.total.nacked_with("DEVICE_UNREGISTERED"), 1);
        assert_eq!(ledger.total.nacked_with("BAD_REGISTRATION"), 1);
        assert!(matches!(
            ledger.answered("m-2"),
            Some(Answer::Nacked { code, .. }) if code == "BAD_REGISTRATION"
        ));
    })
    .await;
}

/// Each payload is written raw (the client's builder would refuse most of them) and must
/// come back as an `INVALID_JSON` nack whose description starts as given.
#[tokio::test]
async fn invalid_messages_are_nacked_invalid_json() {
    within(async {
        let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
        let mut client = Client::connect(&emu).await;
        let big = "x".repeat(4097);
        let cases = [
            (
                r#"{"to":"t","message_id":"ttl-range","time_to_live":-1}"#.to_owned(),
                "InvalidJson: INVALID_TTL : Invalid value (-1) for \"time_to_live\": must be between 0 and \"2419200\"",
            ),
            (
                r#"{"to":"t","message_id":"ttl-big","time_to_live":2419201}"#.to_owned(),
                "InvalidJson: INVALID_TTL : Invalid value (2419201)",
            ),
            (
                r#"{"to":"t","message_id":"ttl-type","time_to_live":"abc"}"#.to_owned(),
                "InvalidJson: JSON_TYPE_ERROR : Field \"time_to_live\" must be a JSON java.lang.Number: abc",
            ),
            (
                r#"{"to":"t","message_id":"bool-type","delay_while_idle":"yes"}"#.to_owned(),
                "InvalidJson: JSON_TYPE_ERROR : Field \"delay_while_idle\" must be a JSON java.lang.Boolean: yes",
            ),
            (
                r#"{"to":"t","message_id":"data-type","data":"text"}"#.to_owned(),
                "InvalidJson: JSON_TYPE_ERROR : Field \"data\" must be a JSON",
            ),
            (
                r#"{"message_id":"no-to","data":{"a":"b"}}"#.to_owned(),
                "InvalidJson: JSON_PARSING_ERROR : Missing Required Field: to",
            ),
            (
                format!(r#"{{"to":"t","message_id":"too-big","data":{{"k":"{big}"}}}}"#),
                "InvalidJson: MESSAGE_TOO_BIG : Message too big",
            ),
            (
                r#"{"to":"t","message_id":"key-from","data":{"from":"me"}}"#.to_owned(),
                "InvalidJson: INVALID_DATA_KEY : Invalid Data Key: from",
            ),
            (
                r#"{"to":"t","message_id":"key-google","data":{"google.x":"1"}}"#.to_owned(),
                "InvalidJson: INVALID_DATA_KEY : Invalid Data Key: google.x",
            ),
        ];
        for (json, want) in &cases {
            client.send_json(None, json).await;
            let nack = client.raw_nack().await;
            assert_eq!(nack.error, NackCode::InvalidJson, "{json}");
            let description = nack.error_description.unwrap_or_default();
            assert!(description.starts_with(want), "{json}: {description}");
        }
        let ledger = emu
            .wait_until(|l| l.total.nacked_with("INVALID_JSON") == cases.len() as u64)
            .await;
        assert!(ledger.unanswered_ids().is_empty());
        assert_eq!(ledger.total.acked, 0);
    })
    .await;
}

#[tokio::test]
async fn unknown_and_malformed_acks_get_bad_ack() {
    within(async {
        let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
        let mut client = Client::connect(&emu).await;
        client
            .send_json(
                None,
                r#"{"to":"dev","message_id":"never-sent","message_type":"ack"}"#,
            )
            .await;
        let nack = client.raw_nack().await;
        assert_eq!(nack.error, NackCode::BadAck);
        assert_eq!(nack.message_id.as_str(), "never-sent");
        // An ack without `to` is malformed.
        client
            .send_json(None, r#"{"message_id":"no-to","message_type":"ack"}"#)
            .await;
        let nack = client.raw_nack().await;
        assert_eq!(nack.error, NackCode::BadAck);
        let ledger = emu
            .wait_until(|l| l.total.bad_acks == 1 && l.total.nacked_total() == 1)
            .await;
        assert_eq!(ledger.total.nacked_with("BAD_ACK"), 1);
    })
    .await;
}

#[tokio::test]
async fn missing_message_id_gets_a_stanza_error() {
    within(async {
        let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
        let mut client = Client::connect(&emu).await;
        client
            .send_raw(br#"<message id="s-1"><gcm xmlns="google:mobile:data">{"random": "text"}</gcm></message>"#)
            .await;
        let (id, error) = client
            .wait_for(|e| match e {
                ConnectionEvent::Anomaly(Anomaly::UnmatchedStanzaError { id, error }) => {
                    Some((id.clone(), error.clone()))
                }
                _ => None,
            })
            .await;
        assert_eq!(id.as_deref(), Some("s-1"));
        let error = error.expect("the error element");
        assert_eq!(error.condition, "bad-request");
        assert_eq!(error.code.as_deref(), Some("400"));
        assert_eq!(error.kind.as_deref(), Some("modify"));
        assert_eq!(
            error.text.as_deref(),
            Some("InvalidJson: JSON_PARSING_ERROR : Missing Required Field: message_id")
        );
        // The payload is echoed, as CCS did.
        assert!(contains(&client.transcript, "{&quot;random&quot;: &quot;text&quot;}") || contains(&client.transcript, r#"{"random": "text"}"#));
        let ledger = emu.wait_until(|l| l.total.stanza_errors == 1).await;
        assert_eq!(ledger.total.downstream_received, 0);
        // The stream goes on.
        client.send_to("t", "after").await;
        client
            .wait_for(|e| matches!(e, ConnectionEvent::Acked { .. }).then_some(()))
            .await;
    })
    .await;
}

#[tokio::test]
async fn wrong_key_is_not_authorized() {
    within(async {
        let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
        let mut config = client_config();
        config.server_key = ServerKey::new("wrong-key").unwrap();
        let mut client = Client::open(&emu, config).await;
        let closed = client.closed().await;
        let ConnectionEvent::Closed {
            reason: CloseReason::AuthFailed { condition, .. },
            ..
        } = closed
        else {
            panic!("expected an authentication failure, got {closed:?}")
        };
        assert_eq!(condition, "not-authorized");
        assert!(contains(
            &client.transcript,
            "<failure xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"><not-authorized/>"
        ));
        let ledger = emu.wait_until(|l| l.connections_closed == 1).await;
        assert_eq!(ledger.total.auth_failures, 1);
        assert_eq!(ledger.connections[0].jid, None);
    })
    .await;
}

#[tokio::test]
async fn duplicate_pending_ids_and_resends_are_counted() {
    within(async {
        let mut config = EmulatorConfig::default();
        // Nothing is answered, so ids stay pending.
        config.faults.missing_ack_probability = 1.0;
        let emu = Emulator::start(config).await.unwrap();
        let mut client = Client::connect(&emu).await;
        client.send_to("t", "dup").await;
        client
            .send_json(Some("dup"), r#"{"to":"t","message_id":"dup"}"#)
            .await;
        let ledger = emu.wait_until(|l| l.total.downstream_received == 2).await;
        assert_eq!(ledger.total.unique_ids, 1);
        assert_eq!(ledger.total.resends, 1);
        assert_eq!(ledger.total.duplicates_pending, 1);
        drop(client);
        let ledger = emu.wait_until(|l| l.connections_closed == 1).await;
        assert_eq!(
            ledger.connections[0].never_answered_ids,
            vec!["dup".to_owned()]
        );
        assert_eq!(ledger.unanswered_ids(), vec!["dup".to_owned()]);
    })
    .await;
}

#[tokio::test]
async fn window_violations_are_counted_or_enforced() {
    within(async {
        let mut config = EmulatorConfig::default();
        config.window = 2;
        config.faults.missing_ack_probability = 1.0;
        let emu = Emulator::start(config.clone()).await.unwrap();
        let mut client = Client::connect(&emu).await;
        for i in 0..5 {
            client.send_to("t", &format!("w-{i}")).await;
        }
        let ledger = emu.wait_until(|l| l.total.downstream_received == 5).await;
        assert_eq!(ledger.total.window_violations, 3);
        drop(client);

        config.strict_window = true;
        let emu = Emulator::start(config).await.unwrap();
        let mut client = Client::connect(&emu).await;
        for i in 0..3 {
            client
                .send(Downstream::builder("t", format!("w-{i}")).unwrap().build())
                .await;
        }
        let closed = client.closed().await;
        let ConnectionEvent::Closed {
            reason: CloseReason::StreamError(e),
            unanswered,
        } = closed
        else {
            panic!("expected a stream error, got {closed:?}")
        };
        assert_eq!(e.condition, "policy-violation");
        assert_eq!(unanswered.len(), 3);
        let ledger = emu.wait_until(|l| l.connections_closed == 1).await;
        assert_eq!(ledger.total.window_violations, 1);
        assert!(matches!(
            &ledger.connections[0].end,
            Some(ConnectionEnd::StreamError { condition, .. }) if condition == "policy-violation"
        ));
    })
    .await;
}
