//! Unmodified third-party XMPP clients in Python against the emulator, each skipped with a
//! note when its library is not installed (`bash ccs-emulator/tests/py/setup.sh` installs
//! both):
//!
//! - slixmpp: direct TLS trusting the emulator's PEM, SASL PLAIN as
//!   `SENDER@gcm.googleapis.com`, one downstream message, its ack;
//! - xmpppy, driven by Google's own 2014 Python sample (ported to Python 3): one downstream
//!   message acked, upstream messages received and acked.

mod support;

use std::ffi::OsString;
use std::path::Path;
use std::process::{Output, Stdio};

use ccs_emulator::{
    Answer, ConnectionEnd, DEFAULT_SERVER_KEY, Emulator, EmulatorConfig, EmulatorHandle,
};
use serde_json::{Map, Value};
use support::within;
use tokio::process::{Child, Command};

/// Whether `python3 -c "import MODULE"` works; prints a note when it does not.
async fn python_has(module: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!(
            "note: skipping the {module} client test: `python3 -c 'import {module}'` failed; \
             install it with `bash ccs-emulator/tests/py/setup.sh`"
        );
    }
    ok
}

/// Starts `tests/py/SCRIPT --port PORT --sender SENDER ARGS...` with the key in the
/// environment.
fn start_script(emu: &EmulatorHandle, script: &str, args: &[OsString]) -> Child {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(script);
    Command::new("python3")
        .arg(&path)
        .args(["--port", &emu.local_addr().port().to_string()])
        .args(["--sender", emu.config().sender_id.as_str()])
        .args(args)
        .env("CCS_SERVER_KEY", DEFAULT_SERVER_KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Waits for the script, checks that it exited 0, and returns what it printed.
async fn finish_script(child: Child, script: &str) -> String {
    let output: Output = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    stdout
}

#[tokio::test]
async fn slixmpp_sends_a_message_and_gets_the_ack() {
    if !python_has("slixmpp").await {
        return;
    }
    within(async {
        let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
        let ca =
            std::env::temp_dir().join(format!("ccs-emulator-{}-py-ca.pem", std::process::id()));
        emu.write_cert_pem(&ca).unwrap();
        let args: Vec<OsString> = vec![
            "--host".into(),
            "127.0.0.1".into(),
            "--ca".into(),
            ca.clone().into(),
            "--message-id".into(),
            "py-1".into(),
        ];
        let child = start_script(&emu, "gcm_client.py", &args);
        let stdout = finish_script(child, "gcm_client.py").await;
        std::fs::remove_file(&ca).unwrap();
        let ack: Value = serde_json::from_str(stdout.trim()).unwrap();
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

#[tokio::test]
async fn googles_xmpppy_sample_sends_and_acks_upstream() {
    if !python_has("xmpp").await {
        return;
    }
    within(async {
        let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
        let args: Vec<OsString> = vec![
            "--message-id".into(),
            "sample-1".into(),
            "--upstream".into(),
            "2".into(),
        ];
        let child = start_script(&emu, "google_sample.py", &args);
        // The sample registers its message handler only after `auth` returns: devices talk
        // to it once it runs (its first message proves that).
        emu.wait_until(|l| l.total.downstream_received == 1).await;
        emu.inject_upstream_data("device-a", Map::new());
        emu.inject_upstream_data("device-b", Map::new());
        let stdout = finish_script(child, "google_sample.py").await;
        let report: Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(report["acked"], serde_json::json!(["sample-1"]));
        assert_eq!(
            report["upstream"],
            serde_json::json!(["emu-up-1", "emu-up-2"])
        );

        let ledger = emu
            .wait_until(|l| l.connections_closed == 1 && l.total.upstream_acked == 2)
            .await;
        assert!(matches!(
            ledger.answered("sample-1"),
            Some(Answer::Acked { .. })
        ));
        assert_eq!(ledger.total.bad_acks, 0);
        assert_eq!(ledger.total.auth_failures, 0);
    })
    .await;
}
