//! TLS failures explained, and certificate pinning, against small TLS servers on loopback.
//!
//! Certificates come from rcgen. Most tests stop at the TLS handshake: they dial with the
//! connector [`ccs_tokio::tls_connector`] builds (the one `Client` uses) and explain the
//! failure with [`ccs_tokio::describe_tls_error`] (what `Client::connect` reports). One test
//! goes through `Client::connect` against the emulator.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ccs_emulator::{DEFAULT_SENDER_ID, DEFAULT_SERVER_KEY, Emulator, EmulatorConfig, TlsSource};
use ccs_proto::credentials::{SenderId, ServerKey};
use ccs_proto::message::Downstream;
use ccs_tokio::{Client, Config, Endpoint, TlsOptions, describe_tls_error, tls_connector};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, date_time_ymd};
use rustls::SupportedProtocolVersion;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A safety net for a hung test; nothing waits on it in a passing run.
async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("timed out")
}

/// A certificate and its key.
struct Made {
    der: CertificateDer<'static>,
    pem: String,
    key: KeyPair,
}

impl Made {
    fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivatePkcs8KeyDer::from(self.key.serialize_der()).into()
    }
}

fn params(names: &[&str], adjust: impl FnOnce(&mut CertificateParams)) -> CertificateParams {
    let names: Vec<String> = names.iter().map(|&n| n.to_owned()).collect();
    let mut p = CertificateParams::new(names).unwrap();
    adjust(&mut p);
    p
}

/// A self-signed certificate; `ca` marks it CA:TRUE, as `openssl req -x509` does.
fn self_signed(names: &[&str], ca: bool, adjust: impl FnOnce(&mut CertificateParams)) -> Made {
    let p = params(names, |p| {
        if ca {
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        }
        adjust(p);
    });
    let key = KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    Made {
        der: cert.der().clone(),
        pem: cert.pem(),
        key,
    }
}

/// A CA and a server certificate it signed.
fn ca_and_leaf(names: &[&str]) -> (Made, Made) {
    let ca_params = params(&[], |p| p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained));
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = params(names, |_| {})
        .signed_by(&leaf_key, &Issuer::new(ca_params, &ca_key))
        .unwrap();
    let ca = Made {
        der: ca_cert.der().clone(),
        pem: ca_cert.pem(),
        key: ca_key,
    };
    let leaf = Made {
        der: leaf.der().clone(),
        pem: leaf.pem(),
        key: leaf_key,
    };
    (ca, leaf)
}

/// Serves `chain` with `key` (which need not match) over TLS: each accepted connection gets
/// `ok` and is held until the client closes.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

async fn tls_server(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    versions: &[&'static SupportedProtocolVersion],
) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Fixed(Arc::new(CertifiedKey::new(chain, signer)))));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    raw_server(move |tcp| {
        let acceptor = acceptor.clone();
        async move {
            if let Ok(mut tls) = acceptor.accept(tcp).await {
                let _ = tls.write_all(b"ok").await;
                let _ = tls.flush().await;
                let mut sink = [0u8; 64];
                while matches!(tls.read(&mut sink).await, Ok(n) if n > 0) {}
            }
        }
    })
    .await
}

/// Runs `serve` on each connection accepted on a fresh loopback port.
async fn raw_server<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(serve(tcp));
        }
    });
    addr
}

/// Serves `made` as its own one-certificate chain, over TLS 1.3 and 1.2.
async fn serve(made: &Made) -> SocketAddr {
    tls_server(
        vec![made.der.clone()],
        made.key_der(),
        rustls::DEFAULT_VERSIONS,
    )
    .await
}

/// Options that trust nothing but what a test adds.
fn nothing_trusted() -> TlsOptions {
    let mut o = TlsOptions::default();
    o.only_extra_roots = true;
    o
}

/// Dials `addr` as `name` with `opts`: `Ok` when the handshake succeeded and the server's
/// `ok` arrived, else the explanation `Client` would report.
async fn dial(addr: SocketAddr, name: &str, mut opts: TlsOptions) -> Result<(), String> {
    let endpoint = Endpoint::new("127.0.0.1", addr.port());
    opts.server_name = Some(name.to_owned());
    let (connector, server_name) = tls_connector(&endpoint, &opts)?;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = within(connector.connect(server_name.clone(), tcp))
        .await
        .map_err(|e| describe_tls_error(&endpoint, &server_name, &e))?;
    let mut ok = [0u8; 2];
    tls.read_exact(&mut ok).await.map_err(|e| e.to_string())?;
    assert_eq!(&ok, b"ok");
    Ok(())
}

fn assert_says(result: Result<(), String>, words: &[&str]) -> String {
    let e = result.expect_err("the connection should have been refused");
    for w in words {
        assert!(e.contains(w), "`{w}` not in: {e}");
    }
    e
}

/// A pinned certificate written to a file, as `--pin-cert FILE` takes it.
fn pem_file(pem: &str) -> std::path::PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "ccs-tokio-tls-errors-{}-{}.pem",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, pem).unwrap();
    path
}

#[tokio::test]
async fn a_ca_certificate_given_as_ca_is_named_as_such_and_pinning_is_suggested() {
    let cert = self_signed(&["localhost"], true, |_| {});
    let addr = serve(&cert).await;
    let mut opts = nothing_trusted();
    opts.ca_pem = vec![cert.pem.clone()];
    let e = assert_says(
        dial(addr, "localhost", opts).await,
        &[
            "TLS with 127.0.0.1:",
            "is a CA certificate (basicConstraints CA:TRUE)",
            "openssl req -x509",
            "--pin-cert FILE",
            "signed by it",
        ],
    );
    println!("{e}");
}

#[tokio::test]
async fn the_same_certificate_pinned_connects_over_tls13_and_tls12() {
    let cert = self_signed(&["localhost"], true, |_| {});
    let file = pem_file(&cert.pem);
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let addr = tls_server(vec![cert.der.clone()], cert.key_der(), &[version]).await;
        let mut opts = nothing_trusted();
        opts.pinned_certs = vec![file.clone()];
        dial(addr, "localhost", opts).await.unwrap();
        // Pinned as PEM text, with the web roots trusted too, and under a name the
        // certificate does not carry: the pin is about this very certificate.
        let mut opts = TlsOptions::default();
        opts.pinned_pem = vec![cert.pem.clone()];
        dial(addr, "not-in-the-certificate.example", opts)
            .await
            .unwrap();
    }
    let _ = std::fs::remove_file(file);
}

#[tokio::test]
async fn pinning_one_certificate_refuses_every_other() {
    let pinned = self_signed(&["localhost"], true, |_| {});
    let mut only_the_pin = nothing_trusted();
    only_the_pin.pinned_pem = vec![pinned.pem.clone()];
    let mut pin_and_web_roots = TlsOptions::default();
    pin_and_web_roots.pinned_pem = vec![pinned.pem.clone()];
    // Another CA-flagged self-signed certificate for the same name.
    let other = self_signed(&["localhost"], true, |_| {});
    let addr = serve(&other).await;
    assert_says(
        dial(addr, "localhost", only_the_pin.clone()).await,
        &["unknown issuer", "byte for byte"],
    );
    assert_says(
        dial(addr, "localhost", pin_and_web_roots.clone()).await,
        &["is a CA certificate"],
    );
    // Another plain self-signed one.
    let other = self_signed(&["localhost"], false, |_| {});
    let addr = serve(&other).await;
    for opts in [only_the_pin, pin_and_web_roots] {
        assert_says(dial(addr, "localhost", opts).await, &["unknown issuer"]);
    }
}

#[tokio::test]
async fn a_server_presenting_the_pinned_certificate_without_its_key_is_refused() {
    let pinned = self_signed(&["localhost"], true, |_| {});
    let impostor = self_signed(&["localhost"], true, |_| {});
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let addr = tls_server(vec![pinned.der.clone()], impostor.key_der(), &[version]).await;
        let mut opts = nothing_trusted();
        opts.pinned_pem = vec![pinned.pem.clone()];
        assert_says(
            dial(addr, "localhost", opts).await,
            &["a signature does not verify", "private key"],
        );
    }
}

#[tokio::test]
async fn pins_remove_no_check_from_other_certificates() {
    let pinned = self_signed(&["localhost"], true, |_| {});
    let (ca, leaf) = ca_and_leaf(&["localhost", "ccs.test"]);
    let addr = tls_server(
        vec![leaf.der.clone()],
        leaf.key_der(),
        rustls::DEFAULT_VERSIONS,
    )
    .await;
    let mut opts = nothing_trusted();
    opts.pinned_pem = vec![pinned.pem.clone()];
    opts.ca_pem = vec![ca.pem.clone()];
    // Trusted through its CA.
    dial(addr, "ccs.test", opts.clone()).await.unwrap();
    // But still for its own names only.
    assert_says(
        dial(addr, "elsewhere.test", opts).await,
        &["is not valid for `elsewhere.test`"],
    );
}

#[tokio::test]
async fn a_wrong_name_lists_the_names_the_certificate_has() {
    let (ca, leaf) = ca_and_leaf(&["localhost", "ccs.test", "127.0.0.1"]);
    let addr = tls_server(
        vec![leaf.der.clone()],
        leaf.key_der(),
        rustls::DEFAULT_VERSIONS,
    )
    .await;
    let mut opts = nothing_trusted();
    opts.ca_pem = vec![ca.pem.clone()];
    let e = assert_says(
        dial(addr, "fcm-xmpp.googleapis.com", opts).await,
        &[
            "is not valid for `fcm-xmpp.googleapis.com`: it is valid only for `localhost`, \
             `ccs.test` or `127.0.0.1`",
            "--server-name NAME",
        ],
    );
    println!("{e}");
}

#[tokio::test]
async fn an_expired_certificate_says_since_when_even_when_pinned() {
    let cert = self_signed(&["localhost"], false, |p| {
        p.not_before = date_time_ymd(2000, 1, 1);
        p.not_after = date_time_ymd(2001, 1, 1);
    });
    let addr = serve(&cert).await;
    let mut opts = nothing_trusted();
    opts.ca_pem = vec![cert.pem.clone()];
    let e = assert_says(
        dial(addr, "localhost", opts).await,
        &[
            "expired on 2001-01-01 00:00:00 UTC (",
            " days ago)",
            "renewed",
        ],
    );
    println!("{e}");
    let mut opts = nothing_trusted();
    opts.pinned_pem = vec![cert.pem.clone()];
    assert_eq!(dial(addr, "localhost", opts).await, Err(e));
}

#[tokio::test]
async fn a_certificate_not_valid_yet_says_from_when_even_when_pinned() {
    let cert = self_signed(&["localhost"], true, |p| {
        p.not_before = date_time_ymd(2090, 6, 1);
        p.not_after = date_time_ymd(2091, 1, 1);
    });
    let addr = serve(&cert).await;
    let mut opts = nothing_trusted();
    opts.pinned_pem = vec![cert.pem.clone()];
    assert_says(
        dial(addr, "localhost", opts).await,
        &[
            "is not valid yet: it is valid from 2090-06-01 00:00:00 UTC",
            "clocks",
        ],
    );
}

#[tokio::test]
async fn an_unknown_issuer_says_how_to_trust_it() {
    let cert = self_signed(&["localhost"], false, |_| {});
    let addr = serve(&cert).await;
    let e = assert_says(
        dial(addr, "localhost", TlsOptions::default()).await,
        &["unknown issuer", "--ca-file FILE", "--pin-cert FILE"],
    );
    println!("{e}");
}

#[tokio::test]
async fn a_port_that_does_not_speak_tls_is_named_as_such() {
    // A plaintext XMPP server answers the TLS hello with XML.
    let addr = raw_server(|mut tcp| async move {
        let mut hello = [0u8; 16];
        let _ = tcp.read(&mut hello).await;
        let _ = tcp
            .write_all(
                b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
                  xmlns:stream='http://etherx.jabber.org/streams'><stream:error>\
                  <not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
                  </stream:error></stream:stream>",
            )
            .await;
    })
    .await;
    let e = assert_says(
        dial(addr, "localhost", TlsOptions::default()).await,
        &["does not seem to speak TLS", "port"],
    );
    println!("{e}");
}

#[tokio::test]
async fn a_server_that_hangs_up_during_the_handshake_is_named_as_such() {
    // Reads the whole hello first: closing with unread bytes would reset the connection.
    let addr = raw_server(|mut tcp| async move {
        let mut hello = [0u8; 4096];
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(200), tcp.read(&mut hello)).await
        {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    assert_says(
        dial(addr, "localhost", TlsOptions::default()).await,
        &["closed the connection during the TLS handshake"],
    );
}

#[tokio::test]
async fn handshake_refusals_name_what_this_client_offers() {
    // TLS alert records: handshake_failure (40), protocol_version (70).
    for (alert, words) in [
        (
            40u8,
            "it shares no TLS version, cipher suite or key exchange",
        ),
        (70, "speaks neither TLS 1.3 nor TLS 1.2"),
    ] {
        let addr = raw_server(move |mut tcp| async move {
            let mut hello = [0u8; 16];
            let _ = tcp.read(&mut hello).await;
            let _ = tcp
                .write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, alert])
                .await;
        })
        .await;
        assert_says(
            dial(addr, "localhost", TlsOptions::default()).await,
            &[words, "offers TLS 1.3 and 1.2"],
        );
    }
}

/// The one test through `Client::connect`: the emulator serves a CA-flagged self-signed
/// certificate, which the client pins.
#[tokio::test]
async fn client_connects_to_a_server_with_a_pinned_ca_certificate() {
    let cert = self_signed(&["localhost"], true, |_| {});
    let mut emu = EmulatorConfig::new(
        SenderId::new(DEFAULT_SENDER_ID).unwrap(),
        ServerKey::new(DEFAULT_SERVER_KEY).unwrap(),
    );
    emu.tls = TlsSource::Provided {
        cert_chain_pem: cert.pem.clone(),
        key_pem: cert.key.serialize_pem(),
    };
    let emu = Emulator::start(emu).await.unwrap();
    let mut config = Config::new(
        Endpoint::new("127.0.0.1", emu.local_addr().port()),
        SenderId::new(DEFAULT_SENDER_ID).unwrap(),
        ServerKey::new(DEFAULT_SERVER_KEY).unwrap(),
    );
    config.tls.server_name = Some("localhost".into());
    config.tls.only_extra_roots = true;
    config.tls.pinned_pem = vec![cert.pem.clone()];
    let client = within(Client::connect(config)).await.unwrap();
    let outcome = within(client.send(Downstream::builder("token", "m-1").unwrap().build()))
        .await
        .unwrap();
    assert!(outcome.is_acked(), "{outcome:?}");
    within(client.close(Duration::from_secs(5))).await;
    emu.shutdown().await;
}
