//! `ccs demo` and `ccs echo` as processes: the demo's summary and exit status (also with
//! drains and faults), and the echo app server against `ccs emulate --control stdin` with
//! upstream injected, ended by SIGTERM.

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

mod support;
use support::{BIN, Emu, WAIT, lines_of};

/// Runs `ccs demo ARGS --json`: (exit code, summary).
fn demo(args: &[&str]) -> (i32, serde_json::Value) {
    let out = Command::new(BIN)
        .arg("demo")
        .args(args)
        .arg("--json")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let summary = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON summary ({e}): {stdout}"));
    (out.status.code().unwrap(), summary)
}

#[test]
fn demo_checks_the_whole_exchange() {
    let (code, s) = demo(&["--count", "2000", "--devices", "10"]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(s["promise_held"], true, "{s}");
    assert_eq!(s["upstream_sent"], 2000);
    assert_eq!(s["upstream_acked"], 2000);
    assert_eq!(s["echoes_distinct"], 2000);
    assert_eq!(s["echoes_acked"], 2000);
    assert!(s["receipts_acked"].as_u64().unwrap() >= 2000, "{s}");
    assert_eq!(s["problems"], serde_json::json!([]));
}

#[test]
fn demo_holds_through_drains_and_connections_killed_mid_stanza() {
    let (code, s) = demo(&[
        "--count",
        "3000",
        "--drain-every",
        "700",
        "--fault-rate",
        "0.005",
        "--seed",
        "7",
    ]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(s["promise_held"], true, "{s}");
    assert!(s["drains"].as_u64().unwrap() >= 4, "{s}");
    assert!(
        s["close_reasons"]["fault_drop"].as_u64().unwrap_or(0) > 0,
        "faults happened: {s}"
    );
    assert!(
        s["upstream_redelivered"].as_u64().unwrap() > 0,
        "the faults made the server redeliver: {s}"
    );
}

#[test]
fn demo_stops_sending_at_its_duration_and_checks_what_was_sent() {
    let (code, s) = demo(&["--count", "100000000", "--duration", "0.3"]);
    assert_eq!(code, 0, "{s}");
    let sent = s["upstream_sent"].as_u64().unwrap();
    assert!(sent > 0 && sent < 100_000_000, "{s}");
    assert_eq!(s["echoes_acked"].as_u64().unwrap(), sent, "{s}");
}

#[test]
fn demo_refuses_a_fault_rate_out_of_range() {
    let out = Command::new(BIN)
        .args(["demo", "--fault-rate", "1.5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--fault-rate"));
}

fn next(rx: &mpsc::Receiver<String>, what: &str) -> String {
    rx.recv_timeout(WAIT)
        .unwrap_or_else(|e| panic!("no {what}: {e}"))
}

#[test]
fn echo_answers_injected_upstream_and_ends_cleanly_on_sigterm() {
    let mut emu = Emu::start(&[]);
    let (addr, cert) = (emu.addr.clone(), emu.cert.clone());
    let mut echo = Command::new(BIN)
        .args(["echo", "--sender-id", "42", "--server-name", "localhost"])
        .args(["--endpoint", &addr, "--ca-file", &cert])
        .env("CCS_API_KEY", "test-key")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let echo_err = lines_of(echo.stderr.take().unwrap());
    assert!(next(&echo_err, "echo's start line").contains("connected"));
    for device in ["device-1", "device-2"] {
        let answer = emu.command(&format!(
            r#"{{"upstream": {{"from": "{device}", "message_id": "up-{device}", "data": {{"k": "v"}}}}}}"#
        ));
        assert_eq!(answer["ok"], "upstream", "{answer}");
    }
    // Ask for the ledger until both echoes and their receipts are acked (the control channel
    // has no "wait"; each question is answered at once, and the exchange takes milliseconds).
    let give_up = std::time::Instant::now() + Duration::from_secs(60);
    let ledger = loop {
        assert!(std::time::Instant::now() < give_up, "the echoes never came");
        let answer = emu.command(r#"{"ledger": null}"#);
        let l = &answer["ledger"];
        let acked = |id: &str| l["ids"][id]["answer"]["kind"] == "acked";
        if acked("echo-up-device-1")
            && acked("echo-up-device-2")
            && l["total"]["upstream_acked"] == 2
            && l["total"]["receipts_acked"] == 2
        {
            break answer;
        }
    };
    assert_eq!(
        ledger["ledger"]["ids"]["echo-up-device-1"]["to"],
        "device-1"
    );
    let status = Command::new("kill")
        .args(["-TERM", &echo.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(echo.wait().unwrap().success());
    let rest: Vec<String> = echo_err.try_iter().collect();
    assert!(
        rest.iter()
            .any(|l| l.contains("2 upstream messages, 2 echoed")),
        "{rest:?}"
    );
    emu.stop();
}
