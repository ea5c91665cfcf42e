//! Dialling: how failures read, and that a connection attempt stuck in the dialer or in the
//! TLS handshake never holds the client up.

use std::net::{TcpListener, TcpStream};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ccs_blocking::prelude::*;
use ccs_blocking::{Event, TcpDialer};
use ccs_emulator::{DEFAULT_SENDER_ID, DEFAULT_SERVER_KEY, Emulator, EmulatorConfig};
use ccs_proto::client::ConnectFailure;

fn config(host: &str, port: u16) -> Config {
    Config::new(
        Endpoint::new(host, port),
        SenderId::new("1").unwrap(),
        ServerKey::new("k").unwrap(),
    )
}

#[test]
fn connection_refused_is_a_clear_error() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut config = config("127.0.0.1", port);
    // Refused is transient: retried until the first-connection deadline, then reported.
    config.client.reconnect.first_connect_timeout = Duration::from_millis(500);
    config.client.reconnect.base = Duration::from_millis(50);
    let err = Client::connect(config).unwrap_err();
    assert!(matches!(err, ConnectError::Connect(_)), "{err:?}");
    assert!(err.to_string().contains("cannot connect"), "{err}");
}

#[test]
fn a_name_that_does_not_resolve_fails_at_once() {
    let mut config = config("no-such-host.invalid", 5235);
    // A deadline the test would notice: giving up must not wait for it.
    config.client.reconnect.first_connect_timeout = Duration::from_secs(3600);
    let err = Client::connect(config).unwrap_err();
    assert!(err.to_string().contains("cannot resolve"), "{err}");
}

#[test]
fn a_handshake_that_hangs_is_stopped_at_the_connect_timeout() {
    // The kernel accepts the TCP connection; nobody ever answers the ClientHello.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = config("127.0.0.1", silent.local_addr().unwrap().port());
    config.client.reconnect.connect_timeout = Duration::from_millis(200);
    config.client.reconnect.first_connect_timeout = Duration::from_millis(700);
    config.client.reconnect.base = Duration::from_millis(20);
    let started = Instant::now();
    let err = Client::connect(config).unwrap_err();
    // `connect` returns once the client has stopped, which waits for every retired
    // connection's thread: each handshake blocked in a read was woken by the shutdown.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, ConnectError::Connect(_)), "{err:?}");
}

/// Hangs in its first dial until released (and then fails it); dials TCP after that.
struct HangingFirst {
    release: Mutex<Option<mpsc::Receiver<()>>>,
    entered: Mutex<Option<mpsc::Sender<()>>>,
}

impl Dialer for HangingFirst {
    type Stream = TcpStream;

    fn dial(&self, endpoint: &Endpoint) -> Result<TcpStream, ConnectFailure> {
        let first = self.release.lock().unwrap().take();
        if let Some(release) = first {
            if let Some(entered) = self.entered.lock().unwrap().take() {
                let _ = entered.send(());
            }
            let _ = release.recv();
            return Err(ConnectFailure::transient("released"));
        }
        TcpDialer::default().dial(endpoint)
    }
}

#[test]
fn a_dialer_that_hangs_is_given_up_and_does_not_hold_close() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let emu = rt
        .block_on(Emulator::start(EmulatorConfig::new(
            SenderId::new(DEFAULT_SENDER_ID).unwrap(),
            ServerKey::new(DEFAULT_SERVER_KEY).unwrap(),
        )))
        .unwrap();
    let mut config = Config::new(
        Endpoint::new("127.0.0.1", emu.local_addr().port()),
        SenderId::new(DEFAULT_SENDER_ID).unwrap(),
        ServerKey::new(DEFAULT_SERVER_KEY).unwrap(),
    )
    .trust_only_pem(emu.cert_pem());
    config.tls.server_name = Some("localhost".into());
    config.client.reconnect.connect_timeout = Duration::from_millis(200);
    config.client.reconnect.base = Duration::from_millis(5);
    config.client.reconnect.cap = Duration::from_millis(50);
    let (release_tx, release_rx) = mpsc::channel();
    let (entered_tx, entered_rx) = mpsc::channel();
    let dialer = HangingFirst {
        release: Mutex::new(Some(release_rx)),
        entered: Mutex::new(Some(entered_tx)),
    };
    // The first attempt hangs in the dialer; the core gives it up at its connect timeout
    // and the second attempt comes up.
    let client = Client::connect_with(config, dialer).unwrap();
    entered_rx
        .recv_timeout(Duration::from_secs(1))
        .expect("the first dial ran");
    let stats = client.stats().unwrap();
    assert_eq!(stats.sockets, 1, "the hung attempt is reported closed");
    assert!(client.send(msg()).unwrap().is_acked());
    let mut events = client.events();
    let report = client.close(Duration::from_secs(5));
    assert!(report.unsent.is_empty());
    let mut closed = false;
    while let Ok(e) = events.try_recv() {
        closed |= matches!(e, Event::Closed);
    }
    assert!(closed, "close returned while the dialer still hangs");
    // The hung thread ends when its dialer returns.
    release_tx.send(()).unwrap();
    let ledger = rt.block_on(emu.shutdown());
    assert!(ledger.unanswered_ids().is_empty());
}

fn msg() -> Downstream {
    Downstream::builder("token-1", "m-1").unwrap().build()
}
