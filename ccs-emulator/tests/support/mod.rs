//! A raw test client: ccs-proto's sans-IO `Connection` driven over tokio-rustls, trusting the
//! emulator's certificate. No sleeps: it waits on the socket and on the connection's own
//! timers; every test wraps itself in [`within`] as a safety net.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ccs_emulator::{DEFAULT_SENDER_ID, DEFAULT_SERVER_KEY, EmulatorHandle};
use ccs_proto::config::{AckMode, ConnectionConfig};
use ccs_proto::connection::{Anomaly, ConnId, Connection, ConnectionEvent};
use ccs_proto::credentials::{SenderId, ServerKey};
use ccs_proto::message::{Downstream, Nack};
use ccs_proto::xml::write::{self, MessageAttrs};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The safety net for a hung test: nothing waits on it when all goes well.
pub async fn within<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .expect("the test hung for 30 s")
}

/// A client config for the emulator's default credentials.
pub fn client_config() -> ConnectionConfig {
    ConnectionConfig::new(
        SenderId::new(DEFAULT_SENDER_ID).unwrap(),
        ServerKey::new(DEFAULT_SERVER_KEY).unwrap(),
    )
}

/// The same, acking upstream messages and receipts only when told.
pub fn manual_config() -> ConnectionConfig {
    let mut c = client_config();
    c.ack_mode = AckMode::Manual;
    c
}

/// A TLS connector that trusts exactly the emulator's certificate.
pub fn connector(cert_pem: &str) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(cert_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// One client connection.
pub struct Client {
    pub conn: Connection,
    tls: TlsStream<TcpStream>,
    buf: Vec<u8>,
    /// Every byte the server sent, in order.
    pub transcript: Vec<u8>,
    eof: bool,
}

impl Client {
    /// Connects (TCP and TLS, checking the certificate for `gcm.googleapis.com`) and starts
    /// the stream; does not wait for it to be ready.
    pub async fn open(emulator: &EmulatorHandle, config: ConnectionConfig) -> Self {
        let tcp = TcpStream::connect(emulator.local_addr()).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let name = ServerName::try_from("gcm.googleapis.com").unwrap();
        let tls = connector(emulator.cert_pem())
            .connect(name, tcp)
            .await
            .unwrap();
        let conn = Connection::new(ConnId(1), config, Instant::now().into_std()).unwrap();
        Self {
            conn,
            tls,
            buf: vec![0; 64 * 1024],
            transcript: Vec::new(),
            eof: false,
        }
    }

    /// Connects and waits until the stream is ready; returns the client and its JID.
    pub async fn connect_with(
        emulator: &EmulatorHandle,
        config: ConnectionConfig,
    ) -> (Self, String) {
        let mut c = Self::open(emulator, config).await;
        let jid = c
            .wait_for(|e| match e {
                ConnectionEvent::Connected { jid } => Some(jid.clone()),
                _ => None,
            })
            .await;
        (c, jid)
    }

    /// [`Self::connect_with`] the default config.
    pub async fn connect(emulator: &EmulatorHandle) -> Self {
        Self::connect_with(emulator, client_config()).await.0
    }

    /// Writes everything the connection queued and flushes.
    pub async fn flush(&mut self) {
        while let Some(bytes) = self.conn.poll_transmit() {
            if self.tls.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = self.tls.flush().await;
    }

    /// The next event; `None` once the connection is closed and every event was taken.
    pub async fn next_event(&mut self) -> Option<ConnectionEvent> {
        loop {
            if let Some(e) = self.conn.poll_event() {
                self.flush().await;
                return Some(e);
            }
            self.flush().await;
            if self.eof || self.conn.state() == ccs_proto::connection::State::Closed {
                return None;
            }
            self.turn().await;
        }
    }

    /// Skips events until `pick` takes one; panics if the connection closes first.
    pub async fn wait_for<T>(&mut self, mut pick: impl FnMut(&ConnectionEvent) -> Option<T>) -> T {
        loop {
            match self.next_event().await {
                Some(e) => {
                    if let Some(t) = pick(&e) {
                        return t;
                    }
                }
                None => panic!("the connection closed while waiting"),
            }
        }
    }

    /// Waits for the `Closed` event and returns it.
    pub async fn closed(&mut self) -> ConnectionEvent {
        loop {
            match self.next_event().await {
                Some(e @ ConnectionEvent::Closed { .. }) => return e,
                Some(_) => {}
                None => panic!("closed without a Closed event"),
            }
        }
    }

    /// Sends a downstream message through the connection (window, in-flight table).
    pub async fn send(&mut self, message: Downstream) {
        self.conn.send(Instant::now().into_std(), message).unwrap();
        self.flush().await;
    }

    /// Sends several messages in one write (one TLS record): the server reads them together.
    pub async fn send_batch(
        &mut self,
        messages: impl IntoIterator<Item = impl Into<Box<Downstream>>>,
    ) {
        for m in messages {
            self.conn.send(Instant::now().into_std(), m).unwrap();
        }
        self.flush().await;
    }

    /// Sends a message with this id to this token.
    pub async fn send_to(&mut self, to: &str, id: &str) {
        self.send(Downstream::builder(to, id).unwrap().build())
            .await;
    }

    /// Writes raw bytes, bypassing the connection (it never learns of them).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.tls.write_all(bytes).await.unwrap();
        self.tls.flush().await.unwrap();
    }

    /// Writes `<message id=..><gcm xmlns="google:mobile:data">JSON</gcm></message>` raw
    /// (the JSON escaped as XML text).
    pub async fn send_json(&mut self, stanza_id: Option<&str>, json: &str) {
        let mut out = Vec::new();
        let attrs = MessageAttrs {
            id: stanza_id,
            ..MessageAttrs::default()
        };
        write::gcm_message(&mut out, &attrs, json);
        self.send_raw(&out).await;
    }

    /// Waits for a nack of a message the connection did not send (one written raw).
    pub async fn raw_nack(&mut self) -> Nack {
        self.wait_for(|e| match e {
            ConnectionEvent::Anomaly(Anomaly::UnknownNack(n)) => Some(n.clone()),
            // BAD_ACK answers one of our acks: the connection reports it apart.
            ConnectionEvent::Anomaly(Anomaly::AckRefused { nack: Some(n), .. }) => {
                Some((**n).clone())
            }
            _ => None,
        })
        .await
    }

    /// Waits for the next bytes from the server (or the connection's next timer).
    pub async fn read_some(&mut self) {
        self.flush().await;
        if !self.eof {
            self.turn().await;
        }
    }

    /// Drops the connection without closing the stream or TLS.
    pub fn vanish(self) {
        drop(self);
    }

    /// One wait: bytes from the server, or the connection's next timer.
    async fn turn(&mut self) {
        let deadline = self.conn.poll_timeout().map(Instant::from_std);
        tokio::select! {
            r = self.tls.read(&mut self.buf) => {
                let now = Instant::now().into_std();
                match r {
                    Ok(n) if n > 0 => {
                        self.transcript.extend_from_slice(&self.buf[..n]);
                        self.conn.handle_input(now, &self.buf[..n]);
                    }
                    _ => {
                        self.eof = true;
                        self.conn.handle_eof(now);
                    }
                }
            }
            () = sleep_until(deadline) => self.conn.handle_timeout(Instant::now().into_std()),
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Whether `haystack` contains `needle`.
pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}
