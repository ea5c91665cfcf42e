//! What only the tokio adapter has: its own runtime dropped as a process exits, and a
//! caller's `Dialer`. The scenarios every adapter passes are in ccs-conformance.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ccs_emulator::{
    ConnectionEnd, DEFAULT_SENDER_ID, DEFAULT_SERVER_KEY, Emulator, EmulatorConfig, EmulatorHandle,
};
use ccs_proto::client::ConnectFailure;
use ccs_proto::credentials::{SenderId, ServerKey};
use ccs_tokio::TcpDialer;
use ccs_tokio::prelude::*;

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

/// A runtime of its own, so that a test can drop it as a process exits.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn close_returns_after_the_stream_end_and_close_notify_are_written() {
    let server = runtime();
    let emu = server.block_on(emulator(|_| {}));
    let config = config_for(&emu);
    let client_runtime = runtime();
    let seen = client_runtime.block_on(async {
        let client = within("connect", Client::connect(config)).await.unwrap();
        let mut events = client.events();
        within("close", client.close(Duration::from_secs(5))).await;
        let mut seen = Vec::new();
        while let Ok(e) = events.try_recv() {
            seen.push(e);
        }
        seen
    });
    // As a process that exits right after `close` returns.
    drop(client_runtime);
    assert!(
        seen.iter()
            .any(|e| matches!(e, Event::SocketClosed { graceful: true, .. })),
        "the socket closed gracefully before close returned: {seen:?}"
    );
    let ledger = server.block_on(within(
        "the server sees every connection end",
        emu.wait_until(|l| l.connections_closed == l.connections_opened),
    ));
    for c in &ledger.connections {
        assert_eq!(c.end, Some(ConnectionEnd::ClientClosed), "{c:?}");
    }
}

/// Counts its dials.
struct CountingDialer(Arc<AtomicUsize>);

impl Dialer for CountingDialer {
    type Stream = tokio::net::TcpStream;

    async fn dial(&self, endpoint: &Endpoint) -> Result<Self::Stream, ConnectFailure> {
        self.0.fetch_add(1, Ordering::SeqCst);
        TcpDialer.dial(endpoint).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_dialer_is_used_for_every_connection() {
    let emu = emulator(|_| {}).await;
    let dials = Arc::new(AtomicUsize::new(0));
    let config = config_for(&emu).connections(2);
    let client = within(
        "connect",
        Client::connect_with(config, CountingDialer(Arc::clone(&dials))),
    )
    .await
    .unwrap();
    let m = Downstream::builder("token-1", "m-1").unwrap().build();
    assert!(within("send", client.send(m)).await.unwrap().is_acked());
    let mut events = client.events();
    emu.drain_all();
    // The replacement connections come up through the same dialer. (The second of the
    // first two may still be coming up: its event does not count.)
    loop {
        let event = within("reconnect", events.recv()).await.unwrap();
        if matches!(event, Event::ConnectionUp { .. }) && dials.load(Ordering::SeqCst) >= 3 {
            break;
        }
    }
    client.close(Duration::from_secs(5)).await;
    emu.shutdown().await;
}

/// Panics on its first dial; dials over TCP after that.
struct PanicsOnce(Arc<AtomicUsize>);

impl Dialer for PanicsOnce {
    type Stream = tokio::net::TcpStream;

    async fn dial(&self, endpoint: &Endpoint) -> Result<Self::Stream, ConnectFailure> {
        if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("a dialer with a bug");
        }
        TcpDialer.dial(endpoint).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_task_that_dies_silently_is_a_failed_dial_at_once() {
    let emu = emulator(|_| {}).await;
    let dials = Arc::new(AtomicUsize::new(0));
    // Without the link reporting its own drop, the first connection would wait for the
    // connect and setup timeouts (an hour here), past the test's own time limit.
    let mut config = config_for(&emu);
    config.client.connection.setup_timeout = Duration::from_secs(3600);
    config.client.reconnect.first_connect_timeout = Duration::from_secs(3600);
    config.client.reconnect.connect_timeout = Duration::from_secs(3600);
    let client = within(
        "connect",
        Client::connect_with(config, PanicsOnce(Arc::clone(&dials))),
    )
    .await
    .unwrap();
    assert_eq!(dials.load(Ordering::SeqCst), 2, "one panic, one retry");
    client.close(Duration::from_secs(5)).await;
    emu.shutdown().await;
}
