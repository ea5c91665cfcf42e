//! `ccs emulate` controlled while it runs, as a process: upstream messages injected through
//! `--control stdin` reach a real client (ccs-tokio), the ledger comes back on stdout or in a
//! file, bad lines get error lines, and SIGUSR1 writes the ledger file.
//!
//! Nothing here sleeps: each wait is a read of the child's stdout or stderr, or of the
//! client's upstream stream, with a timeout.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use ccs_tokio::prelude::*;
use serde_json::Value;

mod support;
use support::{BIN, Emu, WAIT};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ccs-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn injected_upstream_from_chosen_devices_reaches_the_client_and_the_ledger_shows_it_acked() {
    let dir = temp_dir("emu-control");
    let mut emu = Emu::start(&["--cert-out", dir.join("cert.pem").to_str().unwrap()]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt
        .block_on(ccs_tokio::Client::connect(emu.client_config()))
        .unwrap();
    let mut upstream = client.upstream().unwrap();

    let a = emu.command(
        r#"{"upstream": {"from": "device-7", "message_id": "m-1", "category": "com.test", "data": {"k": "v"}}}"#,
    );
    assert_eq!(a["ok"], "upstream", "{a}");
    assert_eq!(a["message_id"], "m-1");
    assert_eq!(a["line"], 1);
    let b = emu.command(r#"{"upstream": {"from": "device-8"}}"#);
    assert_eq!(b["ok"], "upstream", "{b}");
    assert_eq!(b["message_id"], "ctl-up-1", "a fresh id when none is given");
    assert_eq!(b["line"], 2);

    let mut received = Vec::new();
    for _ in 0..2 {
        let item = rt
            .block_on(async { tokio::time::timeout(WAIT, upstream.recv()).await })
            .expect("an upstream message in time")
            .expect("the client is open");
        let UpstreamItem::Message { message, .. } = item else {
            panic!("a message, not a receipt: {item:?}");
        };
        received.push(*message);
    }
    received.sort_by(|x, y| x.from.cmp(&y.from));
    assert_eq!(received[0].from, "device-7");
    assert_eq!(received[0].message_id.to_string(), "m-1");
    assert_eq!(received[0].category.as_deref(), Some("com.test"));
    assert_eq!(received[0].data["k"], "v");
    assert_eq!(received[1].from, "device-8");
    assert_eq!(received[1].message_id.to_string(), "ctl-up-1");
    assert_eq!(received[1].category.as_deref(), Some("com.example.app"));
    assert!(received[1].data.is_empty());

    // Auto-ack mode acked both when they were taken; a clean close has the server read
    // (and count) those acks before it answers the client's closing tag, so the ledger
    // asked for after `close` returns has them.
    let report = rt.block_on(client.close(WAIT));
    assert!(report.unacked_upstream.is_empty(), "{report:?}");

    let answer = emu.command(r#"{"ledger": null}"#);
    assert_eq!(answer["ok"], "ledger", "{answer}");
    assert_eq!(answer["line"], 3);
    let ledger = &answer["ledger"];
    assert_eq!(ledger["total"]["upstream_sent"], 2, "{ledger}");
    assert_eq!(ledger["total"]["upstream_acked"], 2, "{ledger}");
    assert_eq!(ledger["upstream_queued"], 0);
    // (Not `close_reasons`: the server records how the connection ended only after it
    // answered the client's closing tag, so that can still be missing here.)
    assert_eq!(ledger["connections_opened"], 1);

    let path = dir.join("now.json");
    let answer = emu.command(&format!(r#"{{"ledger": {}}}"#, Value::from(path.to_str())));
    assert_eq!(answer["ok"], "ledger", "{answer}");
    assert_eq!(answer["path"], path.to_str().unwrap());
    assert_eq!(read_json(&path)["total"]["upstream_acked"], 2);

    emu.stop();
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_lines_get_an_error_line_each_and_the_emulator_keeps_going() {
    let mut emu = Emu::start(&[]);
    for (line, expected) in [
        ("this is not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        ("{}", "exactly one key"),
        (r#"{"drain": true, "ledger": null}"#, "exactly one key"),
        (r#"{"reboot": true}"#, "unknown command `reboot`"),
        (r#"{"drain": false}"#, "takes true"),
        (r#"{"pause_reading": "yes"}"#, "takes true"),
        (r#"{"ledger": 5}"#, "file path"),
        (r#"{"upstream": "device-1"}"#, "only \"from\" is required"),
        (r#"{"upstream": {"data": {}}}"#, "missing \"from\""),
        (r#"{"upstream": {"from": ""}}"#, "bad \"from\""),
        (
            r#"{"upstream": {"from": "d", "data": [1]}}"#,
            "bad \"data\"",
        ),
        (
            r#"{"upstream": {"from": "d", "message_id": ""}}"#,
            "message_id",
        ),
        (
            r#"{"upstream": {"from": "d", "ttl": 1}}"#,
            "unknown field \"ttl\"",
        ),
    ] {
        let answer = emu.command(line);
        let error = answer["error"].as_str().unwrap_or_else(|| {
            panic!("{line} should get an error, got {answer}");
        });
        assert!(error.contains(expected), "{line}: {error}");
        assert!(answer.get("ok").is_none(), "{answer}");
    }

    // Not UTF-8: an error line too. A blank line gets no answer but counts.
    let stdin = emu.stdin.as_mut().unwrap();
    stdin.write_all(b"\xff\xfe\n\n").unwrap();
    let answer: Value = serde_json::from_str(&emu.stdout.recv_timeout(WAIT).unwrap()).unwrap();
    assert!(
        answer["error"].as_str().unwrap().contains("UTF-8"),
        "{answer}"
    );
    assert_eq!(answer["line"], 15);

    // Still alive and answering, in order.
    assert_eq!(emu.command(r#"{"drain": true}"#)["ok"], "drain");
    assert_eq!(
        emu.command(r#"{"pause_reading": true}"#)["ok"],
        "pause_reading"
    );
    assert_eq!(
        emu.command(r#"{"resume_reading": true}"#)["ok"],
        "resume_reading"
    );
    let answer = emu.command(r#"{"ledger": null}"#);
    assert_eq!(answer["line"], 20);
    assert_eq!(answer["ledger"]["connections_opened"], 0);
    emu.stop();
}

#[test]
fn sigusr1_writes_the_ledger_while_running_and_injected_upstream_waits_for_a_client() {
    let dir = temp_dir("emu-usr1");
    let ledger_path = dir.join("ledger.json");
    let mut emu = Emu::start(&["--ledger", ledger_path.to_str().unwrap()]);
    let answer = emu.command(r#"{"upstream": {"from": "device-1", "data": {"n": "1"}}}"#);
    assert_eq!(answer["ok"], "upstream", "{answer}");

    emu.signal("USR1");
    let note = emu.stderr_line("ledger written");
    assert!(note.contains(ledger_path.to_str().unwrap()), "{note}");
    let ledger = read_json(&ledger_path);
    assert_eq!(ledger["upstream_queued"], 1, "no client yet: {ledger}");
    assert_eq!(ledger["total"]["upstream_sent"], 0);

    // The process is still running (SIGUSR1 did not end it) and still answers.
    assert_eq!(emu.command(r#"{"drain": true}"#)["line"], 2);
    std::fs::remove_file(&ledger_path).unwrap();
    emu.stop();
    // And the exit writes it again.
    assert_eq!(read_json(&ledger_path)["upstream_queued"], 1);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sigusr1_without_a_ledger_path_is_reported_not_fatal() {
    let mut emu = Emu::start(&[]);
    emu.signal("USR1");
    emu.stderr_line("SIGUSR1 ignored");
    assert_eq!(
        emu.command(r#"{"resume_reading": true}"#)["ok"],
        "resume_reading"
    );
    emu.stop();
}

#[test]
fn help_documents_the_control_protocol_and_the_upstream_queue() {
    let out = Command::new(BIN)
        .args(["emulate", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "--control",
        r#"{"upstream": {"from": "device-1""#,
        r#"{"drain": true}"#,
        r#"{"ledger": null}"#,
        r#"{"pause_reading": true}"#,
        "SIGUSR1",
        "while no client is connected",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
}

#[test]
fn drain_moves_the_client_to_a_new_connection_and_pause_reading_holds_messages_until_resumed() {
    let dir = temp_dir("emu-drain-pause");
    let mut emu = Emu::start(&["--cert-out", dir.join("cert.pem").to_str().unwrap()]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let within = |what: &str, f: std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>| {
        rt.block_on(async { tokio::time::timeout(WAIT, f).await })
            .unwrap_or_else(|_| panic!("{what} in time"))
    };
    let mut config = emu.client_config();
    config.client.connections = 1;
    let client = rt.block_on(ccs_tokio::Client::connect(config)).unwrap();
    let mut events = client.events();

    // `drain`: the server announces CONNECTION_DRAINING, and the client opens another
    // connection for new messages. (The first connection's own `ConnectionUp` can still be
    // on its way to the new subscriber: it is told apart by its JID.)
    let first = emu.command(r#"{"ledger": null}"#)["ledger"]["connections"][0]["jid"].clone();
    let first = first
        .as_str()
        .expect("the first connection is bound")
        .to_owned();
    assert_eq!(emu.command(r#"{"drain": true}"#)["ok"], "drain");
    within(
        "a new connection after the drain",
        Box::pin(async {
            loop {
                if let Ok(Event::ConnectionUp { jid, .. }) = events.recv().await
                    && jid != first
                {
                    break;
                }
            }
        }),
    );
    // A message sent now goes on the new connection (the ledger has it once it is acked).
    let m = Downstream::builder("device-1", "after-drain")
        .unwrap()
        .build();
    let outcome = rt
        .block_on(async { tokio::time::timeout(WAIT, client.send(m)).await })
        .expect("answered in time")
        .unwrap();
    assert!(outcome.is_acked(), "{outcome:?}");
    let ledger = emu.command(r#"{"ledger": null}"#)["ledger"].clone();
    assert_eq!(ledger["connections_opened"], 2, "{ledger}");
    assert_eq!(ledger["connections"][0]["drained"], true, "{ledger}");
    assert_eq!(
        ledger["connections"][0]["counters"]["downstream_received"],
        0
    );
    assert_eq!(ledger["connections"][1]["counters"]["acked"], 1, "{ledger}");

    // `pause_reading`: a message sent now is not read, so not answered...
    assert_eq!(
        emu.command(r#"{"pause_reading": true}"#)["ok"],
        "pause_reading"
    );
    let m = Downstream::builder("device-1", "while-paused")
        .unwrap()
        .build();
    let mut pending = rt.block_on(client.enqueue(m, false)).unwrap();
    let ledger = emu.command(r#"{"ledger": null}"#)["ledger"].clone();
    assert_eq!(ledger["total"]["downstream_received"], 1, "{ledger}");
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    assert!(
        std::pin::Pin::new(&mut pending).poll(&mut cx).is_pending(),
        "answered while the server was not reading"
    );
    // ... until reading resumes: then it is read and acked.
    assert_eq!(
        emu.command(r#"{"resume_reading": true}"#)["ok"],
        "resume_reading"
    );
    let outcome = rt
        .block_on(async { tokio::time::timeout(WAIT, pending).await })
        .expect("answered once reading resumed")
        .unwrap();
    assert!(outcome.is_acked(), "{outcome:?}");
    let ledger = emu.command(r#"{"ledger": null}"#)["ledger"].clone();
    assert_eq!(ledger["total"]["downstream_received"], 2, "{ledger}");
    assert_eq!(ledger["total"]["acked"], 2, "{ledger}");

    rt.block_on(client.close(WAIT));
    emu.stop();
    std::fs::remove_dir_all(&dir).ok();
}
