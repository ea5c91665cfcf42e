//! The `metrics` feature: what the engine records, read back from a debugging recorder,
//! against the emulator over loopback TLS. Its own test binary (`required-features =
//! ["metrics"]`): the recorder is global, and this file has one test, so every count is
//! this test's.
#![cfg(feature = "metrics")]

use std::collections::HashMap;
use std::time::Duration;

use ccs_emulator::{DEFAULT_SENDER_ID, DEFAULT_SERVER_KEY, Emulator, EmulatorConfig};
use ccs_proto::client::Outcome;
use ccs_proto::credentials::{SenderId, ServerKey};
use ccs_proto::message::{Downstream, NackCode};
use ccs_tokio::{Client, Config, Endpoint, UpstreamItem};
use metrics::Unit;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::{CompositeKey, MetricKind};

/// The token the emulator answers with `DEVICE_UNREGISTERED`.
const GONE: &str = "token-gone";

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Every metric of the snapshot, by `kind name{label=value,...}`, with its unit. (A snapshot
/// resets the debugging recorder's values, gauges included: the test takes one, at the end.)
fn read(snapshotter: &Snapshotter) -> HashMap<String, (Option<Unit>, DebugValue)> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, unit, description, value)| {
            assert!(description.is_some(), "{key:?} is not described");
            (name(&key), (unit, value))
        })
        .collect()
}

fn name(key: &CompositeKey) -> String {
    let k = key.key();
    let labels: Vec<String> = k
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    let kind = match key.kind() {
        MetricKind::Counter => "counter",
        MetricKind::Gauge => "gauge",
        MetricKind::Histogram => "histogram",
    };
    if labels.is_empty() {
        format!("{kind} {}", k.name())
    } else {
        format!("{kind} {}{{{}}}", k.name(), labels.join(","))
    }
}

type Metrics = HashMap<String, (Option<Unit>, DebugValue)>;

fn counter(m: &Metrics, key: &str) -> u64 {
    match m.get(&format!("counter {key}")) {
        Some((_, DebugValue::Counter(n))) => *n,
        None => 0,
        other => panic!("{key}: {other:?}"),
    }
}

fn gauge(m: &Metrics, key: &str) -> f64 {
    match m.get(&format!("gauge {key}")) {
        Some((_, DebugValue::Gauge(v))) => v.into_inner(),
        other => panic!("{key}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_records_counters_gauges_and_latencies() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this binary");

    let mut config = EmulatorConfig::new(
        SenderId::new(DEFAULT_SENDER_ID).unwrap(),
        ServerKey::new(DEFAULT_SERVER_KEY).unwrap(),
    );
    config.unregistered.insert(GONE.to_owned());
    config.upstream_after_bind = Duration::ZERO;
    let emu = Emulator::start(config).await.unwrap();
    let mut config = Config::new(
        Endpoint::new("127.0.0.1", emu.local_addr().port()),
        SenderId::new(DEFAULT_SENDER_ID).unwrap(),
        ServerKey::new(DEFAULT_SERVER_KEY).unwrap(),
    );
    config.tls.server_name = Some("localhost".into());
    config.tls.ca_pem = vec![emu.cert_pem().to_owned()];
    config.tls.only_extra_roots = true;
    config.client.reconnect.base = Duration::from_millis(5);
    config.client.reconnect.cap = Duration::from_millis(50);
    let client = within("connect", Client::connect(config)).await.unwrap();
    let mut upstream = client.upstream().unwrap();

    // 100 messages at once (the queue holds 10 000): one to a token the server no longer
    // knows, one asking for a receipt.
    let mut pending = Vec::new();
    for i in 0..100 {
        let to = if i == 42 {
            GONE.to_owned()
        } else {
            format!("token-{i}")
        };
        let mut m = Downstream::builder(to, format!("m-{i}")).unwrap();
        if i == 7 {
            m = m.delivery_receipt_requested(true);
        }
        let m = m.build();
        pending.push(client.try_send(m).unwrap());
    }
    let mut acked = 0;
    for p in pending {
        match within("outcome", p).await.unwrap() {
            o if o.is_acked() => acked += 1,
            Outcome::Nacked { nack } => assert_eq!(nack.error, NackCode::DeviceUnregistered),
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(acked, 99);

    // Two upstream messages and the receipt.
    emu.inject_upstream_data("device-1", serde_json::Map::new());
    emu.inject_upstream_data("device-2", serde_json::Map::new());
    let (mut messages, mut receipts) = (0, 0);
    while messages + receipts < 3 {
        match within("upstream", upstream.recv()).await {
            Some(UpstreamItem::Message { .. }) => messages += 1,
            Some(UpstreamItem::Receipt { .. }) => receipts += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((messages, receipts), (2, 1));

    // A drain: the connection is replaced (not a reconnect), and a message still goes out.
    emu.drain_all();
    within("drain seen", async {
        while client.stats().await.unwrap().core.drains == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let m = Downstream::builder("token-after", "m-after")
        .unwrap()
        .build();
    assert!(
        within("send after the drain", client.send(m))
            .await
            .unwrap()
            .is_acked()
    );

    within("close", client.close(Duration::from_secs(5))).await;
    emu.shutdown().await;

    let m = read(&snapshotter);
    assert_eq!(counter(&m, "ccs_messages_sent_total"), 101, "{m:#?}");
    assert_eq!(counter(&m, "ccs_messages_acked_total"), 100);
    assert_eq!(
        counter(&m, "ccs_messages_nacked_total{code=DEVICE_UNREGISTERED}"),
        1
    );
    assert_eq!(counter(&m, "ccs_messages_failed_total{kind=nacked}"), 1);
    assert_eq!(counter(&m, "ccs_messages_retried_total"), 0);
    assert_eq!(counter(&m, "ccs_messages_expired_total"), 0);
    assert_eq!(counter(&m, "ccs_upstream_received_total{kind=message}"), 2);
    assert_eq!(counter(&m, "ccs_upstream_received_total{kind=receipt}"), 1);
    assert_eq!(counter(&m, "ccs_drains_total"), 1);
    assert_eq!(counter(&m, "ccs_reconnects_total"), 0);
    match m.get("histogram ccs_ack_latency_seconds") {
        Some((unit, DebugValue::Histogram(v))) => {
            assert_eq!(*unit, Some(Unit::Seconds));
            assert_eq!(v.len(), 101);
            assert!(
                v.iter()
                    .all(|s| s.into_inner() >= 0.0 && s.into_inner() < 120.0)
            );
        }
        other => panic!("ccs_ack_latency_seconds: {other:?}"),
    }
    // Everything answered and every connection closed.
    assert_eq!(gauge(&m, "ccs_in_flight"), 0.0);
    assert_eq!(gauge(&m, "ccs_queued"), 0.0);
    assert_eq!(gauge(&m, "ccs_connections_up"), 0.0);
}
