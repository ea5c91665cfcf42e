//! Starting with a provided certificate, writing the certificate and the ledger, graceful
//! shutdown, and stopping by dropping the handle.

mod support;

use std::path::PathBuf;

use ccs_emulator::{ConnectionEnd, Emulator, EmulatorConfig, EmulatorError, Ledger, TlsSource};
use ccs_proto::connection::{CloseReason, ConnectionEvent};
use support::{Client, within};

/// A path under the system temp dir, unique to this process and test.
fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ccs-emulator-{}-{name}", std::process::id()))
}

#[tokio::test]
async fn ledger_json_round_trip() {
    within(async {
        let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
        let mut client = Client::connect(&emu).await;
        client.send_to("t", "m-1").await;
        client.send_json(None, r#"{"message_id":"no-to"}"#).await;
        client.raw_nack().await;
        let ledger = emu
            .wait_until(|l| l.total.acked == 1 && l.total.nacked_total() == 1)
            .await;
        let json = ledger.to_json_pretty();
        assert!(json.contains("\"INVALID_JSON\": 1"), "{json}");
        assert_eq!(Ledger::from_json(&json).unwrap(), ledger);

        let path = temp_path("ledger.json");
        ledger.write_json(&path).unwrap();
        let back = Ledger::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(back, ledger);
    })
    .await;
}

#[tokio::test]
async fn shutdown_closes_streams_and_returns_the_ledger() {
    within(async {
        let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
        let mut client = Client::connect(&emu).await;
        client.send_to("t", "m-1").await;
        client
            .wait_for(|e| matches!(e, ConnectionEvent::Acked { .. }).then_some(()))
            .await;
        // The client keeps reading on its own task, so it can answer the server's end tag.
        let reader = tokio::spawn(async move { client.closed().await });
        let ledger = emu.shutdown().await;
        let closed = reader.await.unwrap();
        assert!(
            matches!(
                closed,
                ConnectionEvent::Closed {
                    reason: CloseReason::ServerClosed,
                    ..
                }
            ),
            "{closed:?}"
        );
        assert_eq!(ledger.connections_closed, 1);
        assert_eq!(ledger.connections[0].end, Some(ConnectionEnd::ServerClosed));
        assert_eq!(ledger.close_reasons.get("server_closed"), Some(&1));
        assert_eq!(ledger.total.acked, 1);
    })
    .await;
}

#[tokio::test]
async fn dropping_the_handle_stops_the_server() {
    within(async {
        let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
        let mut client = Client::connect(&emu).await;
        drop(emu);
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
    })
    .await;
}

#[tokio::test]
async fn provided_certificate_is_served_and_written() {
    within(async {
        let names = vec!["gcm.googleapis.com".to_owned()];
        let certified = rcgen::generate_simple_self_signed(names).unwrap();
        let cert_pem = certified.cert.pem();
        let mut config = EmulatorConfig::default();
        config.tls = TlsSource::Provided {
            cert_chain_pem: cert_pem.clone(),
            key_pem: certified.signing_key.serialize_pem(),
        };
        let emu = Emulator::start(config).await.unwrap();
        assert_eq!(emu.cert_pem(), cert_pem);
        let path = temp_path("cert.pem");
        emu.write_cert_pem(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), cert_pem);
        std::fs::remove_file(&path).unwrap();
        // The client trusts exactly this certificate and checks it for gcm.googleapis.com.
        let mut client = Client::connect(&emu).await;
        client.send_to("t", "m-1").await;
        client
            .wait_for(|e| matches!(e, ConnectionEvent::Acked { .. }).then_some(()))
            .await;
    })
    .await;
}

#[tokio::test]
async fn bad_config_and_busy_port_are_errors() {
    within(async {
        let mut config = EmulatorConfig::default();
        config.faults.drop_probability = 2.0;
        assert!(matches!(
            Emulator::start(config).await,
            Err(EmulatorError::Config { .. })
        ));
        let first = Emulator::start(EmulatorConfig::default()).await.unwrap();
        let mut config = EmulatorConfig::default();
        config.listen = first.local_addr();
        assert!(matches!(
            Emulator::start(config).await,
            Err(EmulatorError::Bind(_))
        ));
    })
    .await;
}
