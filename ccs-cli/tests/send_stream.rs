//! `ccs send` as a stream, tested as a process against `ccs emulate`: outcomes come out while
//! the input is still open, a large input goes through in bounded memory, the `--json`
//! fields stay what they were, nothing but outcomes is printed when not on a terminal, and
//! the answers still missing at the end are reported as unsent after `--close-timeout`.
//!
//! No test sleeps: every wait is for the child's own output or exit, under a deadline that
//! kills the child and fails the test (instead of hanging) if it never comes.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

mod support;
use support::{BIN, Emu};

/// `ccs emulate` for these tests: ids not remembered, so a long run's ledger stays small.
fn emulator(extra: &[&str]) -> Emu {
    Emu::start(&[&["--no-track-ids"], extra].concat())
}

/// `ccs send --json` against `emu`, every stream piped.
fn send(emu: &Emu, extra: &[&str]) -> Child {
    Command::new(BIN)
        .args(["send", "--json", "--sender-id", "42"])
        .args(["--server-name", "localhost"])
        .args(["--endpoint", &emu.addr, "--ca-file", &emu.cert])
        .args(extra)
        .env("CCS_API_KEY", "test-key")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs `body` on a thread; if it has not finished within `limit`, kills process `pid` (so
/// the body's blocked reads end) and fails. A deadline for a hang, not a wait for an event.
fn within<T: Send + 'static>(
    limit: Duration,
    pid: u32,
    body: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let _ = tx.send(body());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => {
            worker.join().unwrap();
            v
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The body panicked: pass its panic on.
            std::panic::resume_unwind(worker.join().unwrap_err())
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("no result within {limit:?}: the child was killed");
        }
    }
}

/// Collects a child's standard error on a thread (so it never blocks on a full pipe).
fn drain(mut stderr: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    })
}

fn next_outcome(out: &mut BufReader<ChildStdout>) -> serde_json::Value {
    let mut line = String::new();
    let n = out.read_line(&mut line).unwrap();
    assert!(n > 0, "standard output ended before the expected outcome");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("`{line}`: {e}"))
}

/// Peak resident set size of process `pid` so far, in KiB (`None` once it has exited).
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[test]
fn outcomes_come_out_while_the_input_pipe_stays_open() {
    let emu = emulator(&[]);
    let mut child = send(&emu, &[]);
    let pid = child.id();
    within(Duration::from_secs(60), pid, move || {
        let mut stdin = child.stdin.take().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let err = drain(child.stderr.take().unwrap());
        for i in 1..=3 {
            writeln!(stdin, r#"{{"to":"tok-{i}","data":{{"n":"{i}"}}}}"#).unwrap();
        }
        stdin.flush().unwrap();
        // The input is still open: these outcomes can only come from a streaming send.
        let lines: BTreeSet<u64> = (0..3)
            .map(|_| {
                let v = next_outcome(&mut out);
                assert_eq!(v["result"], "acked", "{v}");
                v["line"].as_u64().unwrap()
            })
            .collect();
        assert_eq!(lines, BTreeSet::from([1, 2, 3]));
        drop(stdin);
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "", "nothing more after the end of the input");
        assert!(child.wait().unwrap().success());
        assert_eq!(err.join().unwrap(), "");
    });
}

#[test]
fn a_large_input_goes_through_in_bounded_memory_without_progress_output_when_piped() {
    // The code that read everything first peaked at about 450 MB here (debug build); the
    // stream stays near 20 MB, its queue of at most 1000 messages.
    const LINES: usize = 200_000;
    const LIMIT_KIB: u64 = 64 * 1024;
    let emu = emulator(&[]);
    let mut child = send(&emu, &[]);
    let pid = child.id();
    within(Duration::from_secs(600), pid, move || {
        let stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            let mut w = std::io::BufWriter::new(stdin);
            for i in 0..LINES {
                writeln!(w, r#"{{"to":"tok-{i}","data":{{"seq":"{i}"}}}}"#).unwrap();
            }
            w.flush().unwrap();
        });
        let err = drain(child.stderr.take().unwrap());
        let mut seen = vec![false; LINES + 1];
        let mut peak = None;
        let mut out = BufReader::new(child.stdout.take().unwrap());
        for n in 0..LINES {
            let v = next_outcome(&mut out);
            assert_eq!(v["result"], "acked", "{v}");
            let line = v["line"].as_u64().unwrap() as usize;
            assert!(
                !std::mem::replace(&mut seen[line], true),
                "line {line} twice"
            );
            if n % 2000 == 0 {
                peak = peak_rss_kib(pid).or(peak);
            }
        }
        // VmHWM only grows: the last reading while the process lives is its peak so far.
        peak = peak_rss_kib(pid).or(peak);
        writer.join().unwrap();
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "", "one outcome per line");
        assert!(child.wait().unwrap().success());
        let peak = peak.expect("the peak RSS was read at least once");
        eprintln!("ccs send: peak RSS {peak} KiB for {LINES} lines");
        assert!(
            peak < LIMIT_KIB,
            "peak RSS {peak} KiB for {LINES} lines (limit {LIMIT_KIB} KiB)"
        );
        // The run lasted well over the second after which a terminal gets a progress bar.
        assert_eq!(err.join().unwrap(), "", "no progress output on a pipe");
    });
}

#[test]
fn json_fields_are_unchanged() {
    let emu = emulator(&["--unregistered", "gone", "--canonical", "old=new"]);
    let mut child = send(&emu, &[]);
    let pid = child.id();
    let input = concat!(
        "{\"to\":\"tok\",\"message_id\":\"m-1\"}\n",
        "{\"to\":\"gone\",\"message_id\":\"m-2\"}\n",
        "{\"to\":\"old\",\"message_id\":\"m-3\"}\n",
        "not json\n",
        "\n",
        "{\"to\":\"tok\",\"time_to_live\":99999999}\n",
    );
    let (status, outcomes, err) = within(Duration::from_secs(60), pid, move || {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let outcomes: Vec<serde_json::Value> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (out.status, outcomes, String::from_utf8(out.stderr).unwrap())
    });
    assert_eq!(status.code(), Some(1), "not every message was acked");
    assert_eq!(err, "");
    let fields = BTreeSet::from(["line", "id", "result", "code", "canonical_id", "error"]);
    for v in &outcomes {
        let keys: BTreeSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, fields, "{v}");
    }
    let by_line = |n: u64| {
        outcomes
            .iter()
            .find(|v| v["line"] == n)
            .unwrap_or_else(|| panic!("no outcome for line {n}: {outcomes:?}"))
    };
    assert_eq!(outcomes.len(), 5, "one per non-blank line: {outcomes:?}");
    let acked = by_line(1);
    assert_eq!(acked["id"], "m-1");
    assert_eq!(acked["result"], "acked");
    assert!(acked["code"].is_null() && acked["canonical_id"].is_null());
    assert!(acked["error"].is_null());
    let nacked = by_line(2);
    assert_eq!(nacked["result"], "nacked");
    assert_eq!(nacked["code"], "DEVICE_UNREGISTERED");
    let canonical = by_line(3);
    assert_eq!(canonical["result"], "acked");
    assert_eq!(canonical["canonical_id"], "new");
    let invalid = by_line(4);
    assert_eq!(invalid["result"], "invalid");
    assert!(invalid["id"].is_null());
    assert!(invalid["error"].as_str().unwrap().contains("JSON"));
    let unbuildable = by_line(6);
    assert_eq!(unbuildable["result"], "invalid");
    assert!(unbuildable["id"].as_str().unwrap().ends_with("-6"));
}

#[test]
fn answers_still_missing_at_the_end_are_reported_unsent_after_the_close_timeout() {
    let emu = emulator(&["--missing-ack-probability", "1"]);
    let mut child = send(&emu, &["--close-timeout", "1"]);
    let pid = child.id();
    let (status, stdout) = within(Duration::from_secs(60), pid, move || {
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, r#"{{"to":"tok","message_id":"lost-1"}}"#).unwrap();
        writeln!(stdin, r#"{{"to":"tok","message_id":"lost-2"}}"#).unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        (out.status, String::from_utf8(out.stdout).unwrap())
    });
    assert_eq!(status.code(), Some(1));
    let outcomes: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(outcomes.len(), 2, "{stdout}");
    for v in outcomes {
        assert_eq!(v["result"], "unsent", "{v}");
    }
}
