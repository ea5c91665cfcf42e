//! An unmodified third-party XMPP client, slixmpp (Python), against the emulator: direct TLS
//! trusting the emulator's PEM, SASL PLAIN as `SENDER@gcm.googleapis.com`, one downstream
//! message, its ack. Skipped with a note when slixmpp is not installed
//! (`bash ccs-emulator/tests/py/setup.sh` installs it).

mod support;

use std::path::Path;
use std::process::Stdio;

use ccs_emulator::{Answer, ConnectionEnd, DEFAULT_SERVER_KEY, Emulator, EmulatorConfig};
use support::within;
use tokio::process::Command;

async fn slixmpp_available() -> bool {
    Command::new("python3")
        .args(["-c", "import slixmpp"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

#[tokio::test]
async fn slixmpp_sends_a_message_and_gets_the_ack() {
    if !slixmpp_available().await {
        eprintln!(
            "note: skipping the slixmpp client test: `python3 -c 'import slixmpp'` failed; \
             install it with `bash ccs-emulator/tests/py/setup.sh` (pip install slixmpp)"
        );
        return;
    }
    within(async {
        let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
        let ca =
            std::env::temp_dir().join(format!("ccs-emulator-{}-py-ca.pem", std::process::id()));
        emu.write_cert_pem(&ca).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/gcm_client.py");
        let output = Command::new("python3")
            .arg(&script)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &emu.local_addr().port().to_string(),
            ])
            .arg("--ca")
            .arg(&ca)
            .args([
                "--sender",
                emu.config().sender_id.as_str(),
                "--message-id",
                "py-1",
            ])
            .env("CCS_SERVER_KEY", DEFAULT_SERVER_KEY)
            .kill_on_drop(true)
            .output()
            .await
            .unwrap();
        std::fs::remove_file(&ca).unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "python client failed ({}):\n{stdout}\n{stderr}",
            output.status
        );
        let ack: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(ack["message_type"], "ack");
        assert_eq!(ack["message_id"], "py-1");
        assert_eq!(ack["from"], "python-device");

        let ledger = emu.wait_until(|l| l.connections_closed == 1).await;
        assert_eq!(
            ledger.answered("py-1"),
            Some(Answer::Acked {
                registration_id: None
            })
        );
        let conn = &ledger.connections[0];
        assert!(
            conn.jid
                .as_deref()
                .is_some_and(|j| j.starts_with("123456789012@gcm.googleapis.com/"))
        );
        assert_eq!(conn.counters.auth_failures, 0);
        assert!(
            matches!(
                conn.end,
                Some(ConnectionEnd::ClientClosed | ConnectionEnd::Eof)
            ),
            "{:?}",
            conn.end
        );
    })
    .await;
}
