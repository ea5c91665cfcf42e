//! The conformance suite: every scenario runs against every adapter, end to end over
//! loopback TLS against the emulator. Each test checks both sides: every
//! message the test sent has exactly one outcome, and the emulator's ledger shows no id left
//! unanswered after resends and no window violation.

use std::collections::VecDeque;
use std::time::Duration;

use ccs_conformance::{Client, Runtime, connect};
use ccs_emulator::{
    ConnectionEnd, DEFAULT_SENDER_ID, DEFAULT_SERVER_KEY, Emulator, EmulatorConfig, EmulatorHandle,
    Ledger,
};
use ccs_net::{AckToken, Config, ConnectError, Endpoint, Event, UpstreamItem};
use ccs_proto::AckMode;
use ccs_proto::client::{DownReason, Outcome, SendErrorKind};
use ccs_proto::connection::CloseReason;
use ccs_proto::credentials::{SenderId, ServerKey};
use ccs_proto::message::{Downstream, NackCode};
use serde_json::json;

/// A safety net for a hung test; nothing waits on it in a passing run.
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

async fn emulator(adjust: impl FnOnce(&mut EmulatorConfig)) -> EmulatorHandle {
    let mut config = EmulatorConfig::new(
        SenderId::new(DEFAULT_SENDER_ID).unwrap(),
        ServerKey::new(DEFAULT_SERVER_KEY).unwrap(),
    );
    adjust(&mut config);
    Emulator::start(config).await.unwrap()
}

fn config_for(emu: &EmulatorHandle) -> Config {
    emu.client_config()
}

fn msg(i: usize) -> Downstream {
    Downstream::builder(format!("token-{}", i % 97), format!("m-{i}"))
        .unwrap()
        .data(json!({"n": i.to_string()}))
        .unwrap()
        .build()
}

/// Sends `count` messages keeping the queue full; returns (acked, other outcomes).
async fn blast(
    client: &Client,
    count: usize,
    make: impl Fn(usize) -> Downstream,
) -> (usize, Vec<Outcome>) {
    let mut pending = VecDeque::new();
    let (mut acked, mut other) = (0, Vec::new());
    let mut tally = |o: Result<Outcome, ccs_net::SendError>| match o {
        Ok(o) if o.is_acked() => acked += 1,
        Ok(o) => other.push(o),
        Err(e) => panic!("send failed: {e}"),
    };
    for i in 0..count {
        let mut m = make(i);
        loop {
            match client.try_send(m) {
                Ok(p) => {
                    pending.push_back(p);
                    break;
                }
                Err(e) if matches!(e.kind, SendErrorKind::QueueFull { .. }) => {
                    m = *e.message.unwrap();
                    tally(
                        pending
                            .pop_front()
                            .expect("a full queue has pending outcomes")
                            .await,
                    );
                }
                Err(e) => panic!("refused: {e}"),
            }
        }
    }
    while let Some(p) = pending.pop_front() {
        tally(p.await);
    }
    (acked, other)
}

fn assert_clean(ledger: &Ledger) {
    assert!(
        ledger.unanswered_ids().is_empty(),
        "unanswered: {:?}",
        &ledger.unanswered_ids()[..ledger.unanswered_ids().len().min(10)]
    );
    assert_eq!(ledger.total.window_violations, 0);
}

async fn run_many(
    rt: Runtime,
    window: usize,
    count: usize,
    adjust: impl FnOnce(&mut EmulatorConfig),
) -> Ledger {
    let emu = emulator(|c| {
        c.window = window;
        adjust(c);
    })
    .await;
    let mut config = config_for(&emu);
    config.client.connection.window = window;
    let client = within("connect", connect(rt, config)).await.unwrap();
    let (acked, other) = within("blast", blast(&client, count, msg)).await;
    assert_eq!(
        acked,
        count,
        "other outcomes: {:?}",
        &other[..other.len().min(5)]
    );
    assert!(other.is_empty());
    let report = within("close", client.close(Duration::from_secs(5))).await;
    assert!(report.unsent.is_empty());
    let ledger = emu.shutdown().await;
    assert_clean(&ledger);
    assert_eq!(ledger.total.unique_ids, count as u64);
    ledger
}

async fn hundred_thousand_messages_window_100(rt: Runtime) {
    let ledger = run_many(rt, 100, 100_000, |_| {}).await;
    assert_eq!(ledger.total.acked, 100_000);
}

async fn hundred_thousand_messages_window_1000(rt: Runtime) {
    let ledger = run_many(rt, 1000, 100_000, |_| {}).await;
    assert_eq!(ledger.total.acked, 100_000);
}

async fn draining_mid_run(rt: Runtime) {
    let ledger = run_many(rt, 100, 30_000, |c| c.drain_after = Some(7_000)).await;
    assert!(
        ledger.connections_opened >= 4,
        "{}",
        ledger.connections_opened
    );
}

async fn connections_killed_at_random_also_mid_stanza(rt: Runtime) {
    let ledger = run_many(rt, 100, 100_000, |c| {
        c.seed = 7;
        c.faults.drop_probability = 0.0002;
    })
    .await;
    assert!(
        ledger.connections_opened >= 5,
        "only {} connections: no faults happened",
        ledger.connections_opened
    );
    assert!(ledger.total.resends > 0);
}

async fn wrong_key_fails_fast_and_clearly(rt: Runtime) {
    let emu = emulator(|_| {}).await;
    let mut config = config_for(&emu);
    config.client.connection.server_key = ServerKey::new("not-the-key").unwrap();
    let err = within("connect", connect(rt, config)).await.unwrap_err();
    assert!(
        matches!(&err, ConnectError::AuthFailed { condition, .. } if condition == "not-authorized"),
        "{err:?}"
    );
    assert!(err.to_string().contains("server key"), "{err}");
}

async fn untrusted_certificate_fails_fast_and_clearly(rt: Runtime) {
    let emu = emulator(|_| {}).await;
    let mut config = config_for(&emu);
    config.tls.ca_pem.clear();
    config.tls.only_extra_roots = false;
    // Untrusted is permanent: no waiting for the first-connection deadline.
    config.client.reconnect.first_connect_timeout = Duration::from_secs(3600);
    let err = within("connect", connect(rt, config)).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ConnectError::Connect(_)), "{err:?}");
    assert!(
        text.contains("certificate") || text.contains("UnknownIssuer"),
        "{text}"
    );
}

async fn connection_refused_is_a_clear_error(rt: Runtime) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut config = Config::new(
        Endpoint::new("127.0.0.1", port),
        SenderId::new("1").unwrap(),
        ServerKey::new("k").unwrap(),
    );
    // Refused is transient: retried until the first-connection deadline, then reported.
    config.client.reconnect.first_connect_timeout = Duration::from_millis(1500);
    config.client.reconnect.base = Duration::from_millis(50);
    let err = within("connect", connect(rt, config)).await.unwrap_err();
    assert!(err.to_string().contains("cannot connect"), "{err}");
}

async fn a_name_that_does_not_resolve_fails_at_once(rt: Runtime) {
    let mut config = Config::new(
        Endpoint::new("no-such-host.invalid", 5235),
        SenderId::new("1").unwrap(),
        ServerKey::new("k").unwrap(),
    );
    // A deadline the test would notice: giving up must not wait for it.
    config.client.reconnect.first_connect_timeout = Duration::from_secs(3600);
    let err = within("connect", connect(rt, config)).await.unwrap_err();
    assert!(err.to_string().contains("cannot resolve"), "{err}");
}

async fn a_server_that_breaks_only_its_first_connection_is_retried(rt: Runtime) {
    // A front that cuts the first connection right after TCP accept, then forwards every
    // later one to the emulator: `connect` must reach the healthy second connection.
    let emu = emulator(|_| {}).await;
    let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = front.local_addr().unwrap().port();
    let backend = emu.local_addr();
    tokio::spawn(async move {
        let (first, _) = front.accept().await.unwrap();
        drop(first);
        loop {
            let (mut inbound, _) = front.accept().await.unwrap();
            tokio::spawn(async move {
                let mut out = tokio::net::TcpStream::connect(backend).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
            });
        }
    });
    let mut config = config_for(&emu);
    config.endpoint = Endpoint::new("127.0.0.1", port);
    config.client.reconnect.first_connect_timeout = Duration::from_secs(3600);
    let client = within("connect", connect(rt, config)).await.unwrap();
    let outcome = within("send", client.send(msg(1))).await.unwrap();
    assert!(outcome.is_acked(), "{outcome:?}");
    within("close", client.close(Duration::from_secs(5))).await;
}

async fn echo_app_server_from_the_seed(rt: Runtime) {
    // Google's sample app server: ack each upstream message and echo its data back.
    let emu = emulator(|c| c.upstream_after_bind = Duration::ZERO).await;
    let client = within("connect", connect(rt, config_for(&emu)))
        .await
        .unwrap();
    let mut upstream = client.upstream().unwrap();
    let n = 50;
    for i in 0..n {
        let mut data = serde_json::Map::new();
        data.insert("hello".into(), json!(format!("world {i}")));
        emu.inject_upstream_data(format!("device-{i}"), data);
    }
    let mut echoes = Vec::new();
    for _ in 0..n {
        let Some(UpstreamItem::Message { message, ack }) =
            within("upstream", upstream.recv()).await
        else {
            panic!("expected an upstream message")
        };
        assert!(!ack.is_manual(), "auto-ack mode hands out no-op tokens");
        let echo =
            Downstream::builder(message.from.clone(), format!("echo-{}", message.message_id))
                .unwrap()
                .data_object(message.data.clone())
                .build();
        let c = client.clone();
        echoes.push(tokio::spawn(async move { c.send(echo).await }));
    }
    for e in echoes {
        assert!(within("echo", e).await.unwrap().unwrap().is_acked());
    }
    let ledger = emu.wait_until(|l| l.total.upstream_acked == n).await;
    assert_eq!(ledger.total.acked, n);
    client.close(Duration::from_secs(5)).await;
    assert_clean(&emu.shutdown().await);
}

async fn receipts_arrive_and_are_acked(rt: Runtime) {
    let emu = emulator(|_| {}).await;
    let client = within("connect", connect(rt, config_for(&emu)))
        .await
        .unwrap();
    let mut upstream = client.upstream().unwrap();
    let n = 20;
    for i in 0..n {
        let m = Downstream::builder("tok", format!("r-{i}"))
            .unwrap()
            .delivery_receipt_requested(true)
            .build();
        assert!(within("send", client.send(m)).await.unwrap().is_acked());
    }
    let mut seen = 0;
    while seen < n {
        match within("receipt", upstream.recv()).await {
            Some(UpstreamItem::Receipt { receipt, .. }) => {
                assert!(receipt.message_id.as_str().starts_with("dr2:r-"));
                seen += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let ledger = emu.wait_until(|l| l.total.receipts_acked == n).await;
    assert_eq!(ledger.total.receipts_sent, n);
    client.close(Duration::from_secs(5)).await;
    assert_clean(&emu.shutdown().await);
}

async fn manual_ack(rt: Runtime) {
    let emu = emulator(|c| c.upstream_after_bind = Duration::ZERO).await;
    let mut config = config_for(&emu);
    config.client.connection.ack_mode = AckMode::Manual;
    let client = within("connect", connect(rt, config)).await.unwrap();
    let mut upstream = client.upstream().unwrap();
    emu.inject_upstream_data("device-1", serde_json::Map::new());
    let Some(UpstreamItem::Message {
        message,
        ack: token,
    }) = within("upstream", upstream.recv()).await
    else {
        panic!("expected a message with an ack token")
    };
    assert_eq!(token.message_id(), &message.message_id);
    assert_eq!(
        emu.ledger().total.upstream_acked,
        0,
        "not acked before the application says so"
    );
    token.ack().await.unwrap();
    emu.wait_until(|l| l.total.upstream_acked == 1).await;
    client.close(Duration::from_secs(5)).await;
    emu.shutdown().await;
}

async fn close_with_messages_in_flight_gives_them_back(rt: Runtime) {
    let emu =
        emulator(|c| c.faults.slow_ack = Some((Duration::from_secs(60), Duration::from_secs(60))))
            .await;
    let client = within("connect", connect(rt, config_for(&emu)))
        .await
        .unwrap();
    let pending: Vec<_> = (0..10).map(|i| client.try_send(msg(i)).unwrap()).collect();
    emu.wait_until(|l| l.total.downstream_received == 10).await;
    let report = within("close", client.close(Duration::from_millis(100))).await;
    assert_eq!(report.unsent.len(), 10);
    assert!(report.deadline_passed);
    for p in pending {
        assert!(matches!(
            within("outcome", p).await.unwrap(),
            Outcome::Unsent {
                maybe_delivered: true
            }
        ));
    }
    let after = client.try_send(msg(99)).unwrap_err();
    assert!(after.message.is_some(), "a refused message is given back");
    emu.shutdown().await;
}

async fn dropping_a_send_future_after_queueing_loses_nothing(rt: Runtime) {
    let emu = emulator(|_| {}).await;
    let client = within("connect", connect(rt, config_for(&emu)))
        .await
        .unwrap();
    let mut events = client.events();
    // No answer can come before the future is dropped (else a preempted test thread may find
    // the outcome already there on the first poll).
    emu.pause_reading();
    {
        let fut = client.send(msg(1));
        tokio::pin!(fut);
        // Poll once so it is queued, then drop it.
        assert!(futures_poll_once(fut.as_mut()).await.is_none());
    }
    emu.resume_reading();
    loop {
        match within("event", events.recv()).await.unwrap() {
            ccs_net::Event::DetachedOutcome { message, outcome } => {
                assert_eq!(message.message_id().as_str(), "m-1");
                assert!(outcome.is_acked());
                break;
            }
            _ => continue,
        }
    }
    client.close(Duration::from_secs(5)).await;
    let ledger = emu.shutdown().await;
    assert_eq!(ledger.total.downstream_received, 1);
    assert_clean(&ledger);
}

async fn an_outcome_that_arrived_before_its_future_was_dropped_is_published(rt: Runtime) {
    let emu = emulator(|_| {}).await;
    let client = within("connect", connect(rt, config_for(&emu)))
        .await
        .unwrap();
    let mut events = client.events();
    let pending = client.try_send(msg(1)).unwrap();
    // Answered in order: once the second outcome is here, the first one has arrived too, in
    // the future nobody polls any more.
    assert!(
        within("send", client.send(msg(2)))
            .await
            .unwrap()
            .is_acked()
    );
    drop(pending);
    loop {
        if let Event::DetachedOutcome { message, outcome } =
            within("event", events.recv()).await.unwrap()
        {
            assert_eq!(message.message_id().as_str(), "m-1");
            assert!(outcome.is_acked());
            break;
        }
    }
    within("close", client.close(Duration::from_secs(5))).await;
    assert_clean(&emu.shutdown().await);
}

async fn futures_poll_once<F: std::future::Future + Unpin>(mut f: F) -> Option<F::Output> {
    std::future::poll_fn(|cx| match std::pin::Pin::new(&mut f).poll(cx) {
        std::task::Poll::Ready(v) => std::task::Poll::Ready(Some(v)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}

async fn try_send_gives_the_message_back_when_the_queue_is_full(rt: Runtime) {
    let emu =
        emulator(|c| c.faults.slow_ack = Some((Duration::from_secs(60), Duration::from_secs(60))))
            .await;
    // `max_queue` counts the messages not yet on the wire, as the core does: with a window of
    // one, one message is on the wire and five wait.
    let config = config_for(&emu).window(1).max_queue(5);
    let client = within("connect", connect(rt, config)).await.unwrap();
    let mut pending = vec![client.try_send(msg(0)).unwrap()];
    within(
        "on the wire",
        emu.wait_until(|l| l.total.downstream_received == 1),
    )
    .await;
    // A command round trip: the turn that put m-0 on the wire has finished (and so freed its
    // place in the queue count).
    client.stats().await.unwrap();
    pending.extend((1..6).map(|i| client.try_send(msg(i)).unwrap()));
    let err = client.try_send(msg(6)).unwrap_err();
    assert_eq!(err.kind, SendErrorKind::QueueFull { limit: 5 });
    assert_eq!(err.message.unwrap().message_id().as_str(), "m-6");
    let report = within("close", client.close(Duration::from_millis(50))).await;
    assert_eq!(report.unsent.len(), 6);
    for p in pending {
        assert!(matches!(
            within("outcome", p).await.unwrap(),
            Outcome::Unsent { .. }
        ));
    }
    emu.shutdown().await;
}

fn big_msg(i: usize, bytes: usize) -> Downstream {
    Downstream::builder("token-big", format!("big-{i}"))
        .unwrap()
        .data(json!({ "blob": "x".repeat(bytes) }))
        .unwrap()
        .build()
}

async fn a_peer_that_stops_reading_leaves_no_task_or_socket_behind(rt: Runtime) {
    let emu = emulator(|c| {
        c.max_data_bytes = 1 << 20;
        c.window = 200;
    })
    .await;
    let mut config = config_for(&emu);
    config.client.connection.window = 200;
    config.client.connection.ping_after = Duration::from_millis(300);
    config.client.connection.ping_timeout = Duration::from_millis(300);
    config.disconnect_grace = Duration::from_millis(300);
    let client = within("connect", connect(rt, config)).await.unwrap();
    let mut events = client.events();
    emu.pause_reading();
    // About 10 MB (in stanzas below the server's 64 KiB limit): more than both TCP buffers
    // hold, so the connection's writer blocks.
    let pending: Vec<_> = (0..170)
        .map(|i| client.try_send(big_msg(i, 60 * 1024)).unwrap())
        .collect();
    // The core gives the connection up when its ping goes unanswered; its socket must then
    // close and its tasks end, although the peer still reads nothing.
    let mut dead = None;
    let graceful = within("the socket of the dead connection closes", async {
        loop {
            match events.recv().await.unwrap() {
                Event::ConnectionDown { id, reason, .. } if dead.is_none() => {
                    assert_eq!(reason, DownReason::Closed(CloseReason::PingTimeout));
                    dead = Some(id);
                }
                Event::SocketClosed { id, graceful } if Some(id) == dead => break graceful,
                _ => {}
            }
        }
    })
    .await;
    assert!(
        !graceful,
        "nothing could be flushed to a peer that does not read"
    );
    let sockets = client.stats().await.unwrap().sockets;
    assert!(sockets <= 1, "only the replacement may be open: {sockets}");
    // The server, reading again, finds the connection closed without the stream end.
    emu.resume_reading();
    let ledger = within(
        "the server sees the end",
        emu.wait_until(|l| l.connection(1).is_some_and(|c| c.end.is_some())),
    )
    .await;
    let end = ledger.connection(1).unwrap().end.clone();
    assert_ne!(end, Some(ConnectionEnd::ClientClosed));
    // Nothing is lost: the messages go out again on the next connection.
    for p in pending {
        assert!(within("outcome", p).await.unwrap().is_acked());
    }
    within("close", client.close(Duration::from_secs(5))).await;
    assert_clean(&emu.shutdown().await);
}

/// Two round trips: after the first, the client has read everything the server wrote before
/// it; after the second, the server has read everything the client wrote in between (acks
/// sent on arrival included).
async fn round_trips(client: &Client, tag: &str) {
    for i in 0..2 {
        let m = Downstream::builder("token-sync", format!("sync-{tag}-{i}"))
            .unwrap()
            .build();
        assert!(
            within("round trip", client.send(m))
                .await
                .unwrap()
                .is_acked()
        );
    }
}

async fn next_message(upstream: &mut ccs_net::UpstreamStream) -> (String, AckToken) {
    match within("upstream", upstream.recv()).await {
        Some(UpstreamItem::Message { message, ack }) => (message.message_id.to_string(), ack),
        other => panic!("expected an upstream message, got {other:?}"),
    }
}

async fn auto_mode_acks_a_message_when_the_application_takes_it(rt: Runtime) {
    let emu = emulator(|c| {
        c.upstream_after_bind = Duration::ZERO;
        c.max_unacked_upstream = 3;
    })
    .await;
    let client = within("connect", connect(rt, config_for(&emu)))
        .await
        .unwrap();
    let mut upstream = client.upstream().unwrap();
    for i in 0..5 {
        emu.inject_upstream_data(format!("device-{i}"), serde_json::Map::new());
    }
    within("sent", emu.wait_until(|l| l.total.upstream_sent == 3)).await;
    round_trips(&client, "a").await;
    let ledger = emu.ledger();
    assert_eq!(ledger.total.upstream_acked, 0, "acked before it was taken");
    assert_eq!(
        ledger.total.upstream_sent, 3,
        "the server's limit of un-acked messages holds the rest back"
    );
    let (id, ack) = next_message(&mut upstream).await;
    assert_eq!(id, "emu-up-1");
    assert!(!ack.is_manual(), "auto mode: a no-op token");
    within(
        "taking it acks it, and the server sends the next",
        emu.wait_until(|l| l.total.upstream_acked == 1 && l.total.upstream_sent == 4),
    )
    .await;
    for _ in 0..4 {
        next_message(&mut upstream).await;
    }
    within("all acked", emu.wait_until(|l| l.total.upstream_acked == 5)).await;
    let stats = client.stats().await.unwrap();
    assert_eq!((stats.upstream_discarded, stats.upstream_deferred), (0, 0));
    let report = within("close", client.close(Duration::from_secs(5))).await;
    assert!(report.unacked_upstream.is_empty(), "{report:?}");
    assert_clean(&emu.shutdown().await);
}

async fn auto_mode_without_a_reader_acks_at_once_and_counts_discarded(rt: Runtime) {
    let emu = emulator(|c| c.upstream_after_bind = Duration::ZERO).await;
    let client = within("connect", connect(rt, config_for(&emu)))
        .await
        .unwrap();
    // The stream was never taken.
    for _ in 0..3 {
        emu.inject_upstream_data("device-1", serde_json::Map::new());
    }
    within("acked", emu.wait_until(|l| l.total.upstream_acked == 3)).await;
    assert_eq!(client.stats().await.unwrap().upstream_discarded, 3);
    // Taken, then dropped.
    drop(client.upstream().unwrap());
    for _ in 0..2 {
        emu.inject_upstream_data("device-1", serde_json::Map::new());
    }
    within("acked", emu.wait_until(|l| l.total.upstream_acked == 5)).await;
    let stats = client.stats().await.unwrap();
    assert_eq!((stats.upstream_discarded, stats.upstream_deferred), (5, 0));
    let report = within("close", client.close(Duration::from_secs(5))).await;
    assert!(report.unacked_upstream.is_empty(), "{report:?}");
    assert_clean(&emu.shutdown().await);
}

async fn a_full_upstream_stream_leaves_messages_for_the_server_to_redeliver(rt: Runtime) {
    let emu = emulator(|c| {
        c.upstream_after_bind = Duration::ZERO;
        c.max_unacked_upstream = 10;
        c.drain_grace = Duration::from_millis(100);
    })
    .await;
    let mut config = config_for(&emu);
    config.upstream_capacity = 3;
    let client = within("connect", connect(rt, config)).await.unwrap();
    let mut upstream = client.upstream().unwrap();
    for i in 0..5 {
        emu.inject_upstream_data(format!("device-{i}"), serde_json::Map::new());
    }
    within("sent", emu.wait_until(|l| l.total.upstream_sent == 5)).await;
    round_trips(&client, "a").await;
    assert_eq!(client.stats().await.unwrap().upstream_deferred, 2);
    assert_eq!(emu.ledger().total.upstream_acked, 0);
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(next_message(&mut upstream).await.0);
    }
    within(
        "three acked",
        emu.wait_until(|l| l.total.upstream_acked == 3),
    )
    .await;
    // The other two were neither handed over nor acked: when this connection ends, the
    // server sends them again on the next one.
    emu.drain_all();
    for _ in 0..2 {
        ids.push(next_message(&mut upstream).await.0);
    }
    ids.sort();
    assert_eq!(
        ids,
        (1..=5).map(|i| format!("emu-up-{i}")).collect::<Vec<_>>()
    );
    let ledger = within("all acked", emu.wait_until(|l| l.total.upstream_acked == 5)).await;
    assert_eq!(ledger.total.redelivered, 2);
    within("close", client.close(Duration::from_secs(5))).await;
    assert_clean(&emu.shutdown().await);
}

async fn acks_of_held_tokens_go_through_while_closing(rt: Runtime) {
    let emu = emulator(|c| c.upstream_after_bind = Duration::ZERO).await;
    let mut config = config_for(&emu);
    config.client.connection.ack_mode = AckMode::Manual;
    let client = within("connect", connect(rt, config)).await.unwrap();
    let mut upstream = client.upstream().unwrap();
    emu.inject_upstream_data("device-1", serde_json::Map::new());
    let (_, token) = next_message(&mut upstream).await;
    drop(upstream);
    let close = client.close(Duration::from_secs(10));
    tokio::pin!(close);
    // Asks for the close (its command is queued before the ack)...
    assert!(futures_poll_once(close.as_mut()).await.is_none());
    // ...and the application, still handling the message, acks it.
    within("ack", token.ack()).await.unwrap();
    let report = within("close", close).await;
    assert!(
        !report.deadline_passed,
        "the close did not wait for the deadline"
    );
    assert!(report.unacked_upstream.is_empty(), "{report:?}");
    let ledger = emu.shutdown().await;
    assert_eq!(ledger.total.upstream_acked, 1);
    assert_eq!(ledger.total.redelivered, 0);
}

async fn close_waits_for_held_tokens_until_its_deadline(rt: Runtime) {
    let emu = emulator(|c| c.upstream_after_bind = Duration::ZERO).await;
    let mut config = config_for(&emu);
    config.client.connection.ack_mode = AckMode::Manual;
    let client = within("connect", connect(rt, config)).await.unwrap();
    let mut upstream = client.upstream().unwrap();
    emu.inject_upstream_data("device-1", serde_json::Map::new());
    let (id, token) = next_message(&mut upstream).await;
    let mut events = client.events();
    // The token is held and never used: the close waits for it, then gives up.
    let report = within("close", client.close(Duration::from_millis(200))).await;
    assert!(report.deadline_passed);
    assert_eq!(
        report
            .unacked_upstream
            .iter()
            .map(|u| (u.message_id.as_str(), u.from.as_str()))
            .collect::<Vec<_>>(),
        [(id.as_str(), "device-1")]
    );
    assert!(
        std::iter::from_fn(|| events.try_recv().ok())
            .any(|e| matches!(e, Event::SocketClosed { graceful: true, .. }))
    );
    assert_eq!(
        token.ack().await,
        Err(ccs_proto::connection::AckError::ConnectionGone)
    );
    assert!(
        upstream.recv().await.is_none(),
        "the stream ends with the client"
    );
    let ledger = emu.shutdown().await;
    assert_eq!(ledger.total.upstream_acked, 0);
}

async fn close_reports_upstream_messages_never_acked(rt: Runtime) {
    let emu = emulator(|c| c.upstream_after_bind = Duration::ZERO).await;
    let client = within("connect", connect(rt, config_for(&emu)))
        .await
        .unwrap();
    let mut upstream = client.upstream().unwrap();
    for i in 1..=3 {
        emu.inject_upstream_data(format!("device-{i}"), serde_json::Map::new());
    }
    within("sent", emu.wait_until(|l| l.total.upstream_sent == 3)).await;
    round_trips(&client, "a").await;
    // One taken (so acked); two still buffered in the stream when it is dropped.
    assert_eq!(next_message(&mut upstream).await.0, "emu-up-1");
    drop(upstream);
    let report = within("close", client.close(Duration::from_secs(5))).await;
    assert!(!report.deadline_passed);
    let unacked: Vec<_> = report
        .unacked_upstream
        .iter()
        .map(|u| (u.message_id.as_str(), u.from.as_str(), u.receipt))
        .collect();
    assert_eq!(
        unacked,
        [
            ("emu-up-2", "device-2", false),
            ("emu-up-3", "device-3", false)
        ]
    );
    let ledger = emu.shutdown().await;
    assert_eq!(ledger.total.upstream_acked, 1);
    // The server keeps them for the next client.
    assert_eq!(ledger.upstream_queued, 2);
}

async fn manual_mode_without_a_reader_leaves_messages_unacked(rt: Runtime) {
    let emu = emulator(|c| c.upstream_after_bind = Duration::ZERO).await;
    let mut config = config_for(&emu);
    config.client.connection.ack_mode = AckMode::Manual;
    let client = within("connect", connect(rt, config)).await.unwrap();
    emu.inject_upstream_data("device-1", serde_json::Map::new());
    within("sent", emu.wait_until(|l| l.total.upstream_sent == 1)).await;
    round_trips(&client, "a").await;
    let stats = client.stats().await.unwrap();
    assert_eq!((stats.upstream_discarded, stats.upstream_deferred), (0, 1));
    let report = within("close", client.close(Duration::from_secs(30))).await;
    assert_eq!(report.unacked_upstream.len(), 1);
    assert!(
        !report.deadline_passed,
        "nobody can ack it: the close does not wait for it"
    );
    let ledger = emu.shutdown().await;
    assert_eq!(ledger.total.upstream_acked, 0);
    assert_eq!(ledger.upstream_queued, 1);
}

async fn a_reserved_place_counts_toward_the_queue_until_used_or_dropped(rt: Runtime) {
    let emu =
        emulator(|c| c.faults.slow_ack = Some((Duration::from_secs(60), Duration::from_secs(60))))
            .await;
    let config = config_for(&emu).window(1).max_queue(2);
    let client = within("connect", connect(rt, config)).await.unwrap();
    let first = client.try_send(msg(0)).unwrap();
    within(
        "on the wire",
        emu.wait_until(|l| l.total.downstream_received == 1),
    )
    .await;
    client.stats().await.unwrap();
    let place = within("room", client.reserve()).await.unwrap();
    let second = client.try_send(msg(1)).unwrap();
    let err = client.try_send(msg(2)).unwrap_err();
    assert_eq!(err.kind, SendErrorKind::QueueFull { limit: 2 });
    drop(place);
    let third = client.try_send(msg(2)).unwrap();
    let err = client.try_send(msg(3)).unwrap_err();
    assert_eq!(
        err.kind,
        SendErrorKind::QueueFull { limit: 2 },
        "full again"
    );
    let report = within("close", client.close(Duration::from_millis(50))).await;
    assert_eq!(report.unsent.len(), 3);
    for p in [first, second, third] {
        assert!(matches!(
            within("outcome", p).await.unwrap(),
            Outcome::Unsent { .. }
        ));
    }
    emu.shutdown().await;
}

async fn reserve_waits_for_room_and_gives_up_when_the_client_closes(rt: Runtime) {
    let emu = emulator(|_| {}).await;
    let config = config_for(&emu).max_queue(1);
    let client = within("connect", connect(rt, config)).await.unwrap();
    let poll_now = |f: &mut std::pin::Pin<
        Box<dyn Future<Output = Option<ccs_net::QueuePlace>> + Send + '_>,
    >| {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(r) => Some(r),
            std::task::Poll::Pending => None,
        }
    };
    // The one place, held: a second `reserve` waits...
    let first = within("room at once", client.reserve()).await.unwrap();
    let mut second: std::pin::Pin<Box<dyn Future<Output = _> + Send + '_>> =
        Box::pin(client.reserve());
    assert!(poll_now(&mut second).is_none(), "a place beyond max_queue");
    // ... until the place is given back.
    drop(first);
    let second = within("room once the place is back", second).await;
    let second = second.expect("a place");
    // Full again; closing ends the wait with no place.
    let third = client.reserve();
    let closing = client.clone();
    let (third, _) = tokio::join!(within("an answer while closing", third), async {
        closing.close(Duration::from_secs(5)).await
    });
    assert!(third.is_none(), "no place once the client is closing");
    drop(second);
    emu.shutdown().await;
}

async fn the_events_channel_ends_after_the_client_closed(rt: Runtime) {
    let emu = emulator(|_| {}).await;
    let client = within("connect", connect(rt, config_for(&emu)))
        .await
        .unwrap();
    let mut events = client.events();
    within("close", client.close(Duration::from_secs(5))).await;
    let mut closed = false;
    loop {
        match within("events", events.recv()).await {
            Ok(Event::Closed) => closed = true,
            Ok(_) => {}
            Err(async_broadcast::RecvError::Overflowed(_)) => {}
            Err(async_broadcast::RecvError::Closed) => break,
        }
    }
    assert!(closed, "Event::Closed comes before the end");
    emu.shutdown().await;
}

async fn a_priority_reply_overtakes_a_bulk_backlog(rt: Runtime) {
    let emu = emulator(|_| {}).await;
    let n = 2000;
    let config = config_for(&emu).window(1).max_queue(n + 1);
    let client = within("connect", connect(rt, config)).await.unwrap();
    let bulk: Vec<_> = (0..n).map(|i| client.try_send(msg(i)).unwrap()).collect();
    let reply = Downstream::builder("token-reply", "reply-1")
        .unwrap()
        .build();
    assert!(
        within("reply", client.send_priority(reply))
            .await
            .unwrap()
            .is_acked()
    );
    // The reply went out ahead of the backlog: most of it is still waiting.
    let mut answered = 0;
    let mut waiting = Vec::new();
    for mut p in bulk {
        match futures_poll_once_ref(&mut p) {
            Some(r) => {
                assert!(r.unwrap().is_acked());
                answered += 1;
            }
            None => waiting.push(p),
        }
    }
    assert!(
        answered < n / 2,
        "{answered} of {n} bulk messages answered before the reply"
    );
    for p in waiting {
        assert!(within("bulk", p).await.unwrap().is_acked());
    }
    client.close(Duration::from_secs(5)).await;
    assert_clean(&emu.shutdown().await);
}

/// The outcome if it has come, without waiting.
fn futures_poll_once_ref(
    p: &mut ccs_net::PendingOutcome,
) -> Option<Result<Outcome, ccs_net::SendError>> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::Pin::new(p).poll(&mut cx) {
        std::task::Poll::Ready(r) => Some(r),
        std::task::Poll::Pending => None,
    }
}

async fn a_batch_larger_than_the_queue_is_answered_in_order(rt: Runtime) {
    let emu = emulator(|c| {
        c.window = 10;
        c.unregistered.insert("token-gone".into());
    })
    .await;
    // The batch is ten times the queue: it is queued a stretch of room at a time.
    let config = config_for(&emu).window(10).max_queue(50);
    let client = within("connect", connect(rt, config)).await.unwrap();
    assert!(
        client
            .enqueue_batch(Vec::new(), false)
            .await
            .await
            .is_empty()
    );
    let n = 500;
    let gone = [7, 300];
    let batch: Vec<_> = (0..n)
        .map(|i| {
            if gone.contains(&i) {
                Downstream::builder("token-gone", format!("m-{i}"))
                    .unwrap()
                    .build()
            } else {
                msg(i)
            }
        })
        .collect();
    let outcomes = within("batch", client.send_batch(batch)).await;
    assert_eq!(outcomes.len(), n);
    for (i, o) in outcomes.into_iter().enumerate() {
        let o = o.unwrap_or_else(|e| panic!("m-{i} refused: {e}"));
        if gone.contains(&i) {
            let nack = o.nack().unwrap_or_else(|| panic!("m-{i}: {o:?}"));
            assert_eq!(nack.message_id.as_str(), format!("m-{i}"));
            assert_eq!(nack.error, NackCode::DeviceUnregistered);
        } else {
            assert!(o.is_acked(), "m-{i}: {o:?}");
        }
    }
    // The single-message path and the priority lane still work beside it.
    assert!(
        within("send", client.send(msg(n)))
            .await
            .unwrap()
            .is_acked()
    );
    let priority = client.enqueue_batch(vec![msg(n + 1)], true).await;
    assert!(
        within("priority", priority).await[0]
            .as_ref()
            .unwrap()
            .is_acked()
    );
    within("close", client.close(Duration::from_secs(5))).await;
    let ledger = emu.shutdown().await;
    assert_clean(&ledger);
    assert_eq!(ledger.total.unique_ids, n as u64 + 2);
}

async fn closing_gives_back_the_messages_of_a_batch_still_waiting_for_room(rt: Runtime) {
    let emu =
        emulator(|c| c.faults.slow_ack = Some((Duration::from_secs(60), Duration::from_secs(60))))
            .await;
    let config = config_for(&emu).window(1).max_queue(5);
    let client = within("connect", connect(rt, config)).await.unwrap();
    let n = 20;
    // The task ends once every message is queued or refused, with the batch's future.
    #[allow(clippy::async_yields_async)]
    let queued = {
        let client = client.clone();
        tokio::spawn(async move { client.enqueue_batch((0..n).map(msg).collect(), false).await })
    };
    // One on the wire, five in the queue, the rest waiting for room that never comes.
    within(
        "on the wire",
        emu.wait_until(|l| l.total.downstream_received == 1),
    )
    .await;
    let report = within("close", client.close(Duration::from_millis(50))).await;
    let outcomes = within("batch", within("queued", queued).await.unwrap()).await;
    assert_eq!(outcomes.len(), n);
    let taken = outcomes.iter().take_while(|o| o.is_ok()).count();
    assert!(taken >= 5, "at least the queue's worth was taken: {taken}");
    assert_eq!(report.unsent.len(), taken);
    for (i, o) in outcomes.into_iter().enumerate() {
        match o {
            Ok(o) => assert!(matches!(o, Outcome::Unsent { .. }), "m-{i}: {o:?}"),
            Err(e) => {
                assert!(i >= taken, "m-{i}");
                assert_eq!(e.kind, SendErrorKind::Closing);
                let back = e.message.expect("a refused message is given back");
                assert_eq!(back.message_id().as_str(), format!("m-{i}"));
            }
        }
    }
    emu.shutdown().await;
}

async fn a_dropped_batch_publishes_every_outcome(rt: Runtime) {
    let emu = emulator(|_| {}).await;
    let client = within("connect", connect(rt, config_for(&emu)))
        .await
        .unwrap();
    let mut events = client.events();
    let arrived = client.enqueue_batch(vec![msg(0), msg(1)], false).await;
    // Answered in order: once this one is acked, the batch's outcomes have arrived.
    assert!(
        within("send", client.send(msg(2)))
            .await
            .unwrap()
            .is_acked()
    );
    // No answer can come for this one before it is dropped.
    emu.pause_reading();
    let unanswered = client.enqueue_batch(vec![msg(3), msg(4)], false).await;
    assert_eq!(unanswered.missing(), 2);
    drop(arrived);
    drop(unanswered);
    emu.resume_reading();
    let mut ids = Vec::new();
    while ids.len() < 4 {
        if let Event::DetachedOutcome { message, outcome } =
            within("event", events.recv()).await.unwrap()
        {
            assert!(outcome.is_acked());
            ids.push(message.message_id().to_string());
        }
    }
    ids.sort();
    assert_eq!(ids, ["m-0", "m-1", "m-3", "m-4"]);
    within("close", client.close(Duration::from_secs(5))).await;
    assert_clean(&emu.shutdown().await);
}

ccs_conformance::for_every_runtime!(
    a_batch_larger_than_the_queue_is_answered_in_order,
    closing_gives_back_the_messages_of_a_batch_still_waiting_for_room,
    a_dropped_batch_publishes_every_outcome,
    a_priority_reply_overtakes_a_bulk_backlog,
    a_reserved_place_counts_toward_the_queue_until_used_or_dropped,
    reserve_waits_for_room_and_gives_up_when_the_client_closes,
    the_events_channel_ends_after_the_client_closed,
    hundred_thousand_messages_window_100,
    hundred_thousand_messages_window_1000,
    draining_mid_run,
    connections_killed_at_random_also_mid_stanza,
    wrong_key_fails_fast_and_clearly,
    untrusted_certificate_fails_fast_and_clearly,
    connection_refused_is_a_clear_error,
    a_name_that_does_not_resolve_fails_at_once,
    a_server_that_breaks_only_its_first_connection_is_retried,
    echo_app_server_from_the_seed,
    receipts_arrive_and_are_acked,
    manual_ack,
    close_with_messages_in_flight_gives_them_back,
    dropping_a_send_future_after_queueing_loses_nothing,
    an_outcome_that_arrived_before_its_future_was_dropped_is_published,
    try_send_gives_the_message_back_when_the_queue_is_full,
    a_peer_that_stops_reading_leaves_no_task_or_socket_behind,
    auto_mode_acks_a_message_when_the_application_takes_it,
    auto_mode_without_a_reader_acks_at_once_and_counts_discarded,
    a_full_upstream_stream_leaves_messages_for_the_server_to_redeliver,
    acks_of_held_tokens_go_through_while_closing,
    close_waits_for_held_tokens_until_its_deadline,
    close_reports_upstream_messages_never_acked,
    manual_mode_without_a_reader_leaves_messages_unacked,
);
