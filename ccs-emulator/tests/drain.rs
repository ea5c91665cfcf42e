//! CONNECTION_DRAINING: after N messages, on demand, and the grace period.

mod support;

use std::time::Duration;

use ccs_emulator::{ConnectionEnd, Emulator, EmulatorConfig};
use ccs_proto::connection::{CloseReason, ConnectionEvent};
use ccs_proto::message::{Downstream, NackCode};
use serde_json::Map;
use support::{Client, manual_config, within};
use tokio::time::Instant;

#[tokio::test]
async fn drain_after_n_messages_returns_the_rest_and_closes() {
    within(async {
        let mut config = EmulatorConfig::default();
        config.drain_after = Some(2);
        let emu = Emulator::start(config).await.unwrap();
        let mut client = Client::connect(&emu).await;
        // All three arrive together, before the control message can leave.
        client
            .send_batch(
                ["m-1", "m-2", "m-3"].map(|id| Downstream::builder("t", id).unwrap().build()),
            )
            .await;
        let mut acked = Vec::new();
        let mut returned = Vec::new();
        let mut drained = false;
        let reason = loop {
            match client.next_event().await.expect("a Closed event") {
                ConnectionEvent::Acked { message, .. } => {
                    acked.push(message.message_id().to_string())
                }
                ConnectionEvent::Returned { message } => {
                    assert!(drained, "the control message comes first");
                    returned.push(message.message_id().to_string());
                }
                ConnectionEvent::Draining => drained = true,
                ConnectionEvent::Closed { reason, unanswered } => {
                    assert!(unanswered.is_empty());
                    break reason;
                }
                _ => {}
            }
        };
        assert_eq!(acked, ["m-1", "m-2"]);
        assert_eq!(returned, ["m-3"]);
        assert_eq!(reason, CloseReason::ServerClosed);
        let ledger = emu.wait_until(|l| l.connections_closed == 1).await;
        let conn = &ledger.connections[0];
        assert!(conn.drained);
        assert_eq!(conn.counters.nacked_with("CONNECTION_DRAINING"), 1);
        assert_eq!(conn.end, Some(ConnectionEnd::ServerClosed));
    })
    .await;
}

#[tokio::test]
async fn draining_connection_waits_for_upstream_acks_and_nacks_new_messages() {
    within(async {
        let mut config = EmulatorConfig::default();
        config.drain_after = Some(1);
        let emu = Emulator::start(config).await.unwrap();
        let mut client = Client::connect_with(&emu, manual_config()).await.0;
        emu.inject_upstream_data("device", Map::new());
        let handle = client
            .wait_for(|e| match e {
                ConnectionEvent::Upstream { ack, .. } => ack.clone(),
                _ => None,
            })
            .await;
        client.send_to("t", "m-1").await;
        client
            .wait_for(|e| matches!(e, ConnectionEvent::Draining).then_some(()))
            .await;
        // The connection refuses new messages itself now; written raw, the server nacks it.
        client
            .send_json(Some("late"), r#"{"to":"t","message_id":"late"}"#)
            .await;
        let nack = client.raw_nack().await;
        assert_eq!(nack.error, NackCode::ConnectionDraining);
        // The un-acked upstream message keeps the connection open; acking it lets it close.
        client.conn.ack(Instant::now().into_std(), &handle).unwrap();
        client.flush().await;
        let closed = client.closed().await;
        assert!(matches!(
            closed,
            ConnectionEvent::Closed {
                reason: CloseReason::ServerClosed,
                ..
            }
        ));
        let ledger = emu.wait_until(|l| l.connections_closed == 1).await;
        assert_eq!(ledger.total.upstream_acked, 1);
        assert_eq!(ledger.total.acked, 1);
        assert_eq!(ledger.total.nacked_with("CONNECTION_DRAINING"), 1);
    })
    .await;
}

#[tokio::test]
async fn drain_all_drains_open_connections_only() {
    within(async {
        let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
        let mut a = Client::connect(&emu).await;
        let mut b = Client::connect(&emu).await;
        emu.drain_all();
        for client in [&mut a, &mut b] {
            client
                .wait_for(|e| matches!(e, ConnectionEvent::Draining).then_some(()))
                .await;
            let closed = client.closed().await;
            assert!(matches!(
                closed,
                ConnectionEvent::Closed {
                    reason: CloseReason::ServerClosed,
                    ..
                }
            ));
        }
        // A connection opened afterwards works normally.
        let mut c = Client::connect(&emu).await;
        c.send_to("t", "after-drain").await;
        c.wait_for(|e| matches!(e, ConnectionEvent::Acked { .. }).then_some(()))
            .await;
        let ledger = emu.wait_until(|l| l.connections_closed == 2).await;
        assert!(ledger.connections[0].drained && ledger.connections[1].drained);
        assert!(!ledger.connections[2].drained);
    })
    .await;
}

#[tokio::test]
async fn grace_period_closes_a_connection_with_pending_messages() {
    within(async {
        let mut config = EmulatorConfig::default();
        config.faults.missing_ack_probability = 1.0;
        config.drain_grace = Duration::from_millis(100);
        let emu = Emulator::start(config).await.unwrap();
        let mut client = Client::connect(&emu).await;
        client.send_to("t", "stuck").await;
        emu.wait_until(|l| l.total.downstream_received == 1).await;
        emu.drain_all();
        let closed = client.closed().await;
        let ConnectionEvent::Closed { reason, unanswered } = closed else {
            unreachable!()
        };
        assert_eq!(reason, CloseReason::ServerClosed);
        assert_eq!(unanswered.len(), 1);
        let ledger = emu.wait_until(|l| l.connections_closed == 1).await;
        assert_eq!(ledger.connections[0].never_answered_ids, ["stuck"]);
    })
    .await;
}
