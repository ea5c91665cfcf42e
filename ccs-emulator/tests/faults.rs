//! Fault injection: cut connections, stream errors, slow and missing acks, tiny writes,
//! keepalives. Every fault is drawn from the config's seed.

mod support;

use std::time::Duration;

use ccs_emulator::{ConnectionEnd, Emulator, EmulatorConfig};
use ccs_proto::connection::{CloseReason, ConnectionEvent};
use ccs_proto::message::Downstream;
use serde_json::Map;
use support::{Client, within};

fn seeded(seed: u64) -> EmulatorConfig {
    let mut config = EmulatorConfig::default();
    config.seed = seed;
    config
}

/// Bytes the server writes for the handshake and for one ack, measured on a clean run with
/// the same seed (the stream id and resource come from it, so the lengths repeat).
async fn handshake_and_ack_lengths(seed: u64) -> (usize, usize) {
    let emu = Emulator::start(seeded(seed)).await.unwrap();
    let mut client = Client::connect(&emu).await;
    let handshake = client.transcript.len();
    client.send_to("t", "m-1").await;
    client
        .wait_for(|e| matches!(e, ConnectionEvent::Acked { .. }).then_some(()))
        .await;
    (handshake, client.transcript.len() - handshake)
}

#[tokio::test]
async fn drop_after_n_bytes_cuts_mid_stanza() {
    within(async {
        let (handshake, ack) = handshake_and_ack_lengths(11).await;
        let cut = handshake + ack / 2;
        let mut config = seeded(11);
        config.faults.drop_after_bytes = Some(cut as u64);
        let emu = Emulator::start(config).await.unwrap();
        let mut client = Client::connect(&emu).await;
        assert_eq!(client.transcript.len(), handshake);
        client.send_to("t", "m-1").await;
        let closed = client.closed().await;
        let ConnectionEvent::Closed { reason, unanswered } = closed else {
            unreachable!()
        };
        assert_eq!(reason, CloseReason::Eof { mid_stanza: true });
        assert_eq!(unanswered.len(), 1);
        assert_eq!(client.transcript.len(), cut, "exactly N bytes arrived");
        let ledger = emu.wait_until(|l| l.connections_closed == 1).await;
        let conn = &ledger.connections[0];
        assert_eq!(
            conn.end,
            Some(ConnectionEnd::FaultDrop {
                after_bytes: cut as u64
            })
        );
        assert_eq!(conn.counters.bytes_out, cut as u64);
        // The server did answer; the client never saw it.
        assert_eq!(conn.counters.acked, 1);
    })
    .await;
}

#[tokio::test]
async fn random_drop_cuts_inside_a_write() {
    within(async {
        let mut config = seeded(3);
        config.faults.drop_probability = 1.0;
        let emu = Emulator::start(config).await.unwrap();
        let mut client = Client::open(&emu, support::client_config()).await;
        let closed = client.closed().await;
        assert!(
            matches!(
                closed,
                ConnectionEvent::Closed {
                    reason: CloseReason::Eof { .. },
                    ..
                }
            ),
            "{closed:?}"
        );
        let ledger = emu.wait_until(|l| l.connections_closed == 1).await;
        let Some(ConnectionEnd::FaultDrop { after_bytes }) = ledger.connections[0].end else {
            panic!("{:?}", ledger.connections[0].end)
        };
        assert!(after_bytes > 0);
        assert_eq!(client.transcript.len() as u64, after_bytes);
    })
    .await;
}

#[tokio::test]
async fn stream_error_fault_ends_the_connection() {
    within(async {
        let mut config = seeded(5);
        config.faults.stream_error_probability = 1.0;
        let emu = Emulator::start(config).await.unwrap();
        let mut client = Client::connect(&emu).await;
        client.send_to("t", "m-1").await;
        let closed = client.closed().await;
        let ConnectionEvent::Closed {
            reason: CloseReason::StreamError(e),
            unanswered,
        } = closed
        else {
            panic!("{closed:?}")
        };
        assert!(
            ["internal-server-error", "system-shutdown"].contains(&e.condition.as_str()),
            "{e:?}"
        );
        assert_eq!(unanswered.len(), 1);
        let ledger = emu.wait_until(|l| l.connections_closed == 1).await;
        assert!(matches!(
            ledger.connections[0].end,
            Some(ConnectionEnd::StreamError { .. })
        ));
        assert_eq!(ledger.connections[0].never_answered_ids, ["m-1"]);
        assert_eq!(ledger.unanswered_ids(), ["m-1"]);
    })
    .await;
}

#[tokio::test]
async fn missing_ack_is_recorded_as_never_answered() {
    within(async {
        let mut config = seeded(1);
        config.faults.missing_ack_probability = 1.0;
        let emu = Emulator::start(config).await.unwrap();
        let mut client = Client::connect(&emu).await;
        client.send_to("t", "silent").await;
        emu.wait_until(|l| l.total.downstream_received == 1).await;
        client.vanish();
        let ledger = emu.wait_until(|l| l.connections_closed == 1).await;
        assert_eq!(ledger.connections[0].end, Some(ConnectionEnd::Eof));
        assert_eq!(ledger.total.never_answered, 1);
        assert_eq!(ledger.connections[0].never_answered_ids, ["silent"]);
        assert_eq!(ledger.unanswered_ids(), ["silent"]);
        assert_eq!(ledger.answered("silent"), None);
    })
    .await;
}

/// Half the messages go unanswered on each connection; resending the rest on the next one
/// ends with every id answered, and the ledger shows each resend.
#[tokio::test]
async fn resends_until_nothing_is_unanswered() {
    within(async {
        let mut config = seeded(7);
        config.faults.missing_ack_probability = 0.5;
        config.drain_grace = Duration::from_millis(20);
        let emu = Emulator::start(config).await.unwrap();
        let mut outstanding: Vec<Box<Downstream>> = (0..20)
            .map(|i| Box::new(Downstream::builder("t", format!("r-{i}")).unwrap().build()))
            .collect();
        let mut rounds = 0;
        while !outstanding.is_empty() {
            rounds += 1;
            assert!(rounds <= 40, "p = 0.5 should not need this many rounds");
            let mut client = Client::connect(&emu).await;
            let n = outstanding.len() as u64;
            client.send_batch(std::mem::take(&mut outstanding)).await;
            let index = rounds - 1;
            emu.wait_until(|l| {
                l.connections
                    .get(index)
                    .is_some_and(|c| c.counters.downstream_received == n)
            })
            .await;
            // Draining makes the server close once the grace period is over, so the client
            // learns exactly what was left unanswered.
            emu.drain_all();
            let ConnectionEvent::Closed { unanswered, .. } = client.closed().await else {
                unreachable!()
            };
            outstanding = unanswered;
        }
        let ledger = emu
            .wait_until(|l| l.connections_closed == rounds as u64)
            .await;
        assert!(rounds > 1, "the fault never fired");
        assert!(ledger.unanswered_ids().is_empty());
        assert_eq!(ledger.total.unique_ids, 20);
        assert_eq!(ledger.total.acked, 20);
        assert_eq!(ledger.total.resends, ledger.total.never_answered);
        assert_eq!(ledger.total.downstream_received, 20 + ledger.total.resends);
    })
    .await;
}

#[tokio::test]
async fn slow_acks_arrive_late_but_arrive() {
    within(async {
        let mut config = seeded(9);
        config.faults.slow_ack = Some((Duration::from_millis(5), Duration::from_millis(40)));
        let emu = Emulator::start(config).await.unwrap();
        let mut client = Client::connect(&emu).await;
        client
            .send_batch((0..5).map(|i| Downstream::builder("t", format!("s-{i}")).unwrap().build()))
            .await;
        let mut acked = 0;
        while acked < 5 {
            client
                .wait_for(|e| matches!(e, ConnectionEvent::Acked { .. }).then_some(()))
                .await;
            acked += 1;
        }
        let ledger = emu.wait_until(|l| l.total.acked == 5).await;
        assert!(ledger.unanswered_ids().is_empty());
    })
    .await;
}

#[tokio::test]
async fn tiny_writes_still_parse() {
    within(async {
        let mut config = seeded(13);
        config.faults.tiny_writes = true;
        let emu = Emulator::start(config).await.unwrap();
        let mut client = Client::connect(&emu).await;
        client
            .send_batch((0..10).map(|i| {
                Downstream::builder("device", format!("t-{i}"))
                    .unwrap()
                    .delivery_receipt_requested(true)
                    .build()
            }))
            .await;
        emu.inject_upstream_data("device", Map::new());
        let (mut acks, mut receipts, mut upstream) = (0, 0, 0);
        while acks < 10 || receipts < 10 || upstream < 1 {
            match client.next_event().await.expect("still open") {
                ConnectionEvent::Acked { .. } => acks += 1,
                ConnectionEvent::Receipt { .. } => receipts += 1,
                ConnectionEvent::Upstream { .. } => upstream += 1,
                ConnectionEvent::Anomaly(a) => panic!("{a:?}"),
                _ => {}
            }
        }
        let ledger = emu
            .wait_until(|l| l.total.receipts_acked == 10 && l.total.upstream_acked == 1)
            .await;
        assert_eq!(ledger.total.acked, 10);
    })
    .await;
}

#[tokio::test]
async fn whitespace_keepalives_when_idle() {
    within(async {
        let mut config = seeded(2);
        config.whitespace_keepalive = Some(Duration::from_millis(10));
        let emu = Emulator::start(config).await.unwrap();
        let mut client = Client::connect(&emu).await;
        let handshake = client.transcript.len();
        while client.transcript.len() < handshake + 3 {
            client.read_some().await;
        }
        assert!(client.transcript[handshake..].iter().all(|&b| b == b' '));
        assert_eq!(client.conn.state(), ccs_proto::connection::State::Connected);
    })
    .await;
}

#[tokio::test]
async fn paused_reading_reads_nothing_until_resumed() {
    within(async {
        let mut config = seeded(5);
        config.upstream_after_bind = Duration::ZERO;
        let emu = Emulator::start(config).await.unwrap();
        let mut client = Client::connect(&emu).await;
        emu.pause_reading();
        client.send_to("t", "m-1").await;
        // The server still writes: an upstream message injected after the client's message
        // arrives, while the message itself stays unread.
        emu.inject_upstream_data("device-1", Map::new());
        client
            .wait_for(|e| matches!(e, ConnectionEvent::Upstream { .. }).then_some(()))
            .await;
        let ledger = emu.ledger();
        assert_eq!(ledger.total.downstream_received, 0);
        assert_eq!(ledger.total.upstream_sent, 1);
        emu.resume_reading();
        client
            .wait_for(|e| matches!(e, ConnectionEvent::Acked { .. }).then_some(()))
            .await;
        let ledger = emu.wait_until(|l| l.total.upstream_acked == 1).await;
        assert_eq!(ledger.total.acked, 1);
    })
    .await;
}
