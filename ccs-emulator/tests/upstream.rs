//! Delivery receipts, injected and generated upstream messages, holding back, and
//! redelivery of what was not acked when a connection ended.

mod support;

use ccs_emulator::{Emulator, EmulatorConfig, UpstreamGenerator};
use ccs_proto::connection::{AckHandle, ConnectionEvent};
use ccs_proto::message::{Downstream, ReceiptStatus, Upstream};
use serde_json::{Map, Value, json};
use support::{Client, manual_config, within};
use tokio::time::Instant;

fn data(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

async fn next_upstream(client: &mut Client) -> (Upstream, Option<AckHandle>) {
    client
        .wait_for(|e| match e {
            ConnectionEvent::Upstream { message, ack } => Some((message.clone(), ack.clone())),
            _ => None,
        })
        .await
}

#[tokio::test]
async fn receipt_follows_the_ack_and_is_acked() {
    within(async {
        let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
        let mut client = Client::connect(&emu).await;
        let msg = Downstream::builder("device-1", "m-1")
            .unwrap()
            .delivery_receipt_requested(true)
            .build();
        client.send(msg).await;
        let mut acked = false;
        let receipt = client
            .wait_for(|e| match e {
                ConnectionEvent::Acked { .. } => {
                    acked = true;
                    None
                }
                ConnectionEvent::Receipt { receipt, .. } => Some(receipt.clone()),
                _ => None,
            })
            .await;
        assert!(acked, "the ack comes before the receipt");
        assert_eq!(receipt.message_id.as_str(), "dr2:m-1");
        assert_eq!(receipt.status, ReceiptStatus::MessageSentToDevice);
        assert_eq!(
            receipt.original_message_id.as_ref().map(|i| i.as_str()),
            Some("m-1")
        );
        assert_eq!(receipt.device_registration_id.as_deref(), Some("device-1"));
        assert_eq!(receipt.from, "gcm.googleapis.com");
        // The client auto-acks it; the server sees that ack.
        let ledger = emu.wait_until(|l| l.total.receipts_acked == 1).await;
        assert_eq!(ledger.total.receipts_sent, 1);
        assert_eq!(ledger.total.acked, 1);
        assert_eq!(ledger.total.bad_acks, 0);
    })
    .await;
}

#[tokio::test]
async fn injected_upstream_is_delivered_and_acked() {
    within(async {
        let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
        let mut client = Client::connect_with(&emu, manual_config()).await.0;
        let id = emu.inject_upstream_data("device-9", data(json!({"hello": "world"})));
        let (message, ack) = next_upstream(&mut client).await;
        assert_eq!(message.message_id, id);
        assert_eq!(message.from, "device-9");
        assert_eq!(message.category.as_deref(), Some("com.example.app"));
        assert_eq!(message.data.get("hello"), Some(&json!("world")));
        let ledger = emu.wait_until(|l| l.total.upstream_sent == 1).await;
        assert_eq!(ledger.total.upstream_acked, 0);
        client
            .conn
            .ack(
                Instant::now().into_std(),
                &ack.expect("manual mode gives a handle"),
            )
            .unwrap();
        client.flush().await;
        let ledger = emu.wait_until(|l| l.total.upstream_acked == 1).await;
        assert_eq!(ledger.total.redelivered, 0);
        assert_eq!(ledger.upstream_queued, 0);
    })
    .await;
}

#[tokio::test]
async fn unacked_upstream_is_redelivered_on_the_next_connection() {
    within(async {
        let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
        let mut first = Client::connect_with(&emu, manual_config()).await.0;
        let id = emu.inject_upstream_data("device-1", data(json!({"n": "1"})));
        let (message, _never_acked) = next_upstream(&mut first).await;
        assert_eq!(message.message_id, id);
        first.vanish();
        let ledger = emu.wait_until(|l| l.connections_closed == 1).await;
        assert_eq!(ledger.upstream_queued, 1);
        assert_eq!(ledger.total.upstream_acked, 0);

        // The next connection gets the same message again and acks it (auto mode).
        let mut second = Client::connect(&emu).await;
        let (again, _) = next_upstream(&mut second).await;
        assert_eq!(again, message);
        let ledger = emu.wait_until(|l| l.total.upstream_acked == 1).await;
        assert_eq!(ledger.total.redelivered, 1);
        assert_eq!(ledger.total.upstream_sent, 2);
        assert_eq!(ledger.connections[1].counters.redelivered, 1);
        assert_eq!(ledger.upstream_queued, 0);
    })
    .await;
}

#[tokio::test]
async fn upstream_is_held_back_until_the_client_acks() {
    within(async {
        let mut config = EmulatorConfig::default();
        config.max_unacked_upstream = 2;
        let emu = Emulator::start(config).await.unwrap();
        let mut client = Client::connect_with(&emu, manual_config()).await.0;
        for i in 0..5 {
            emu.inject_upstream_data("device", data(json!({"i": i.to_string()})));
        }
        let (_, ack1) = next_upstream(&mut client).await;
        let (_, _ack2) = next_upstream(&mut client).await;
        // Two are out, un-acked: the server holds the other three back.
        let ledger = emu.wait_until(|l| l.total.upstream_sent == 2).await;
        assert_eq!(ledger.upstream_queued, 3);
        client
            .conn
            .ack(Instant::now().into_std(), &ack1.unwrap())
            .unwrap();
        client.flush().await;
        let (third, _) = next_upstream(&mut client).await;
        assert_eq!(third.message_id.as_str(), "emu-up-3");
        let ledger = emu.wait_until(|l| l.total.upstream_sent == 3).await;
        assert_eq!(ledger.upstream_queued, 2);
    })
    .await;
}

#[tokio::test]
async fn generated_upstream_flows_at_a_rate() {
    within(async {
        let mut config = EmulatorConfig::default();
        config.upstream_generator = Some(UpstreamGenerator::new(2000.0, "generator-device"));
        let emu = Emulator::start(config).await.unwrap();
        let mut client = Client::connect(&emu).await;
        let (first, _) = next_upstream(&mut client).await;
        assert_eq!(first.from, "generator-device");
        assert!(first.message_id.as_str().starts_with("gen-"));
        let mut previous = first.message_id.as_str()[4..].parse::<u64>().unwrap();
        for _ in 0..20 {
            let (next, _) = next_upstream(&mut client).await;
            let n = next.message_id.as_str()[4..].parse::<u64>().unwrap();
            assert!(n > previous, "in order");
            previous = n;
        }
        let ledger = emu.wait_until(|l| l.total.upstream_acked >= 21).await;
        assert_eq!(ledger.total.redelivered, 0);
        drop(client);
        let ledger = emu.shutdown().await;
        assert!(ledger.total.upstream_acked >= 21);
    })
    .await;
}
