//! End to end over loopback TLS against the emulator, with the client driven from smol's
//! and from async-std's `block_on` (every scenario runs under both). The emulator is a
//! tokio server: it runs on a tokio runtime each test holds, and its futures
//! (`wait_until`, `shutdown`) are awaited from the client's runtime (tokio's channels and
//! join handles need no tokio context to be awaited).
//!
//! What every adapter must do is in ccs-conformance, which runs its scenarios against this
//! adapter too (from a tokio harness); here are the scenarios that matter per executor and
//! what only this adapter has (its IO thread's end, a panicking dialer).
//!
//! No test sleeps to wait for something: each waits for an event, an outcome or the
//! emulator's ledger, under a timeout that only a hung test reaches.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ccs_async_std::ccs_proto::AckMode;
use ccs_async_std::ccs_proto::client::{ConnectFailure, Outcome, SendErrorKind};
use ccs_async_std::ccs_proto::credentials::{SenderId, ServerKey};
use ccs_async_std::ccs_proto::message::Downstream;
use ccs_async_std::{Client, Config, Dialer, Endpoint, Event, SendError, TcpDialer, UpstreamItem};
use ccs_emulator::{
    ConnectionEnd, DEFAULT_SENDER_ID, DEFAULT_SERVER_KEY, Emulator, EmulatorConfig, EmulatorHandle,
    Ledger,
};
use serde_json::json;

/// A safety net for a hung test; nothing waits on it in a passing run.
async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    futures_lite::future::or(async { Some(f.await) }, async {
        async_io::Timer::after(Duration::from_secs(60)).await;
        None
    })
    .await
    .unwrap_or_else(|| panic!("timed out: {what}"))
}

/// The emulator's runtime: one worker thread (the machine has two cores, and tests run in
/// parallel).
fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// Starts an emulator on `rt` (awaited from the client's runtime).
async fn emulator(
    rt: &tokio::runtime::Runtime,
    adjust: impl FnOnce(&mut EmulatorConfig) + Send + 'static,
) -> EmulatorHandle {
    let mut config = EmulatorConfig::new(
        SenderId::new(DEFAULT_SENDER_ID).unwrap(),
        ServerKey::new(DEFAULT_SERVER_KEY).unwrap(),
    );
    adjust(&mut config);
    within("emulator", rt.spawn(Emulator::start(config)))
        .await
        .unwrap()
        .unwrap()
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
async fn blast(client: &Client, count: usize) -> (usize, Vec<Outcome>) {
    let mut pending = VecDeque::new();
    let (mut acked, mut other) = (0, Vec::new());
    let mut tally = |o: Result<Outcome, SendError>| match o {
        Ok(o) if o.is_acked() => acked += 1,
        Ok(o) => other.push(o),
        Err(e) => panic!("send failed: {e}"),
    };
    for i in 0..count {
        let mut m = msg(i);
        loop {
            match client.try_send(m) {
                Ok(p) => {
                    pending.push_back(p);
                    break;
                }
                Err(e) if matches!(e.kind, SendErrorKind::QueueFull { .. }) => {
                    m = *e.message.unwrap();
                    let first = pending
                        .pop_front()
                        .expect("a full queue has pending outcomes");
                    tally(first.await);
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
    let unanswered = ledger.unanswered_ids();
    assert!(
        unanswered.is_empty(),
        "unanswered: {:?}",
        &unanswered[..unanswered.len().min(10)]
    );
    assert_eq!(ledger.total.window_violations, 0);
}

/// Sends `count` messages at `window` over `client` and checks both sides.
async fn round_trip(client: &Client, emu: EmulatorHandle, count: usize) -> Ledger {
    let (acked, other) = within("blast", blast(client, count)).await;
    assert!(other.is_empty(), "{:?}", &other[..other.len().min(5)]);
    assert_eq!(acked, count);
    let report = within("close", client.close(Duration::from_secs(5))).await;
    assert!(report.unsent.is_empty(), "{:?}", report.unsent);
    let ledger = within("shutdown", emu.shutdown()).await;
    assert_clean(&ledger);
    assert_eq!(ledger.total.unique_ids, count as u64);
    assert_eq!(ledger.total.acked, count as u64);
    ledger
}

// ---- scenarios ---------------------------------------------------------------------------

async fn ten_thousand_messages_window_100(rt: &tokio::runtime::Runtime) {
    let emu = emulator(rt, |c| c.window = 100).await;
    let mut config = config_for(&emu);
    config.client.connection.window = 100;
    let client = within("connect", Client::connect(config)).await.unwrap();
    round_trip(&client, emu, 10_000).await;
}

async fn manual_acks_go_through_tokens(rt: &tokio::runtime::Runtime) {
    let emu = emulator(rt, |c| c.upstream_after_bind = Duration::ZERO).await;
    let mut config = config_for(&emu);
    config.client.connection.ack_mode = AckMode::Manual;
    let client = within("connect", Client::connect(config)).await.unwrap();
    let mut upstream = client.upstream().unwrap();
    let n = 5;
    for i in 0..n {
        emu.inject_upstream_data(format!("device-{i}"), serde_json::Map::new());
    }
    let mut tokens = Vec::new();
    for _ in 0..n {
        let Some(UpstreamItem::Message { message, ack }) =
            within("upstream", upstream.recv()).await
        else {
            panic!("expected an upstream message")
        };
        assert!(ack.is_manual());
        assert_eq!(ack.message_id(), &message.message_id);
        tokens.push(ack);
    }
    assert_eq!(
        emu.ledger().total.upstream_acked,
        0,
        "nothing acked before the application says so"
    );
    for token in tokens {
        token.ack().await.unwrap();
    }
    within("acks", emu.wait_until(|l| l.total.upstream_acked == n)).await;
    let report = within("close", client.close(Duration::from_secs(5))).await;
    assert!(report.unacked_upstream.is_empty());
    within("shutdown", emu.shutdown()).await;
}

/// Wraps [`TcpDialer`] and counts its dials.
struct CountingDialer(Arc<AtomicUsize>);

impl Dialer for CountingDialer {
    type Stream = <TcpDialer as Dialer>::Stream;

    async fn dial(&self, endpoint: &Endpoint) -> Result<Self::Stream, ConnectFailure> {
        self.0.fetch_add(1, Ordering::SeqCst);
        TcpDialer.dial(endpoint).await
    }
}

async fn a_custom_dialer_makes_every_connection(rt: &tokio::runtime::Runtime) {
    // The emulator drains each connection after 300 messages: the client reconnects, and
    // every connection must come from the dialer.
    let emu = emulator(rt, |c| c.drain_after = Some(300)).await;
    let dials = Arc::new(AtomicUsize::new(0));
    let dialer = CountingDialer(Arc::clone(&dials));
    let client = within("connect", Client::connect_with(config_for(&emu), dialer))
        .await
        .unwrap();
    let ledger = round_trip(&client, emu, 1_000).await;
    assert!(
        ledger.connections_opened >= 3,
        "{}",
        ledger.connections_opened
    );
    assert_eq!(
        dials.load(Ordering::SeqCst) as u64,
        ledger.connections_opened
    );
}

/// Wraps [`TcpDialer`] and says when it is dropped: the IO thread drops it as its loop ends.
struct DropSignalDialer(async_channel::Sender<()>);

impl Dialer for DropSignalDialer {
    type Stream = <TcpDialer as Dialer>::Stream;

    async fn dial(&self, endpoint: &Endpoint) -> Result<Self::Stream, ConnectFailure> {
        TcpDialer.dial(endpoint).await
    }
}

impl Drop for DropSignalDialer {
    fn drop(&mut self) {
        let _ = self.0.try_send(());
    }
}

async fn close_is_graceful_and_ends_the_io_loop(rt: &tokio::runtime::Runtime) {
    let emu = emulator(rt, |_| {}).await;
    let (tx, gone) = async_channel::bounded(1);
    let client = within(
        "connect",
        Client::connect_with(config_for(&emu), DropSignalDialer(tx)),
    )
    .await
    .unwrap();
    let mut events = client.events();
    assert!(
        within("send", client.send(msg(1)))
            .await
            .unwrap()
            .is_acked()
    );
    within("close", client.close(Duration::from_secs(5))).await;
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push(e);
    }
    assert!(
        seen.iter()
            .any(|e| matches!(e, Event::SocketClosed { graceful: true, .. })),
        "the socket closed gracefully before close returned: {seen:?}"
    );
    // The client (and so its handle) is still alive: the loop ends on close alone.
    within("the IO loop ends", gone.recv()).await.unwrap();
    let ledger = within(
        "the server sees every connection end",
        emu.wait_until(|l| l.connections_closed == l.connections_opened),
    )
    .await;
    for c in &ledger.connections {
        assert_eq!(c.end, Some(ConnectionEnd::ClientClosed), "{c:?}");
    }
    drop(client);
    assert_clean(&within("shutdown", emu.shutdown()).await);
}

async fn dropping_every_clone_finishes_and_ends_the_io_loop(rt: &tokio::runtime::Runtime) {
    let emu = emulator(rt, |_| {}).await;
    let (tx, gone) = async_channel::bounded(1);
    let client = within(
        "connect",
        Client::connect_with(config_for(&emu), DropSignalDialer(tx)),
    )
    .await
    .unwrap();
    let pending = client.try_send(msg(1)).unwrap();
    drop(client.clone());
    drop(client);
    // What was queued is still answered.
    assert!(within("outcome", pending).await.unwrap().is_acked());
    within("the IO loop ends", gone.recv()).await.unwrap();
    let ledger = within("shutdown", emu.shutdown()).await;
    assert_clean(&ledger);
    assert_eq!(ledger.total.acked, 1);
}

async fn dropping_connect_before_it_resolves_ends_the_io_loop(_rt: &tokio::runtime::Runtime) {
    // Nothing listens there, and the first connection would be retried for an hour.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut config = Config::new(
        Endpoint::new("127.0.0.1", port),
        SenderId::new("1").unwrap(),
        ServerKey::new("k").unwrap(),
    );
    config.client.reconnect.first_connect_timeout = Duration::from_secs(3600);
    let (tx, gone) = async_channel::bounded(1);
    let connect = Client::connect_with(config, DropSignalDialer(tx));
    assert!(
        futures_lite::future::poll_once(std::pin::pin!(connect))
            .await
            .is_none(),
        "connect cannot have finished"
    );
    // The connect future (and with it the only handle) is gone: the client stops.
    within("the IO loop ends", gone.recv()).await.unwrap();
}

/// Panics on its first dial, then dials as [`TcpDialer`].
struct PanicsOnceDialer(AtomicUsize);

impl Dialer for PanicsOnceDialer {
    type Stream = <TcpDialer as Dialer>::Stream;

    async fn dial(&self, endpoint: &Endpoint) -> Result<Self::Stream, ConnectFailure> {
        assert!(
            self.0.fetch_add(1, Ordering::SeqCst) > 0,
            "the test's dialer panics on its first dial"
        );
        TcpDialer.dial(endpoint).await
    }
}

async fn a_dialer_that_panics_costs_one_attempt(rt: &tokio::runtime::Runtime) {
    let emu = emulator(rt, |_| {}).await;
    let mut config = config_for(&emu);
    // Retried at once, not after the connect timeout.
    config.client.reconnect.connect_timeout = Duration::from_secs(3600);
    config.client.reconnect.first_connect_timeout = Duration::from_secs(3600);
    let client = within(
        "connect",
        Client::connect_with(config, PanicsOnceDialer(AtomicUsize::new(0))),
    )
    .await
    .unwrap();
    assert!(
        within("send", client.send(msg(1)))
            .await
            .unwrap()
            .is_acked()
    );
    within("close", client.close(Duration::from_secs(5))).await;
    assert_clean(&within("shutdown", emu.shutdown()).await);
}

// ---- every scenario under both runtimes ----------------------------------------------------

macro_rules! on_both_runtimes {
    ($($scenario:ident),* $(,)?) => {
        mod smol_runtime {
            $(
                #[test]
                fn $scenario() {
                    let rt = super::tokio_runtime();
                    smol::block_on(super::$scenario(&rt));
                }
            )*
        }
        mod async_std_runtime {
            $(
                #[test]
                fn $scenario() {
                    let rt = super::tokio_runtime();
                    async_std::task::block_on(super::$scenario(&rt));
                }
            )*
        }
    };
}

on_both_runtimes!(
    ten_thousand_messages_window_100,
    manual_acks_go_through_tokens,
    a_custom_dialer_makes_every_connection,
    close_is_graceful_and_ends_the_io_loop,
    dropping_every_clone_finishes_and_ends_the_io_loop,
    dropping_connect_before_it_resolves_ends_the_io_loop,
    a_dialer_that_panics_costs_one_attempt,
);
