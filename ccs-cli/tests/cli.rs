//! The `ccs` binary as a process: `emulate --json`, `send` against it (bad lines, nacks), the
//! ledger written on SIGTERM, and `bench`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_ccs");

struct Emulator {
    child: Child,
    addr: String,
    cert: String,
}

impl Emulator {
    fn start(extra: &[&str], ledger: &std::path::Path) -> Self {
        let mut child = Command::new(BIN)
            .args(["emulate", "--json", "--sender-id", "42", "--ledger"])
            .arg(ledger)
            .args(extra)
            .env("CCS_API_KEY", "test-key")
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&first).unwrap();
        Self {
            child,
            addr: v["listening"].as_str().unwrap().to_owned(),
            cert: v["cert"].as_str().unwrap().to_owned(),
        }
    }

    /// SIGTERM, then wait for it to write its ledger and exit.
    fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        assert!(self.child.wait().unwrap().success());
    }
}

fn send(emu: &Emulator, input: &str, extra: &[&str]) -> (i32, Vec<serde_json::Value>) {
    let mut child = Command::new(BIN)
        .args([
            "send",
            "--json",
            "--sender-id",
            "42",
            "--server-name",
            "localhost",
        ])
        .args(["--endpoint", &emu.addr, "--ca-file", &emu.cert])
        .args(extra)
        .env("CCS_API_KEY", "test-key")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let lines = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (out.status.code().unwrap(), lines)
}

#[test]
fn send_against_an_emulator_with_bad_lines_and_nacks_then_the_ledger() {
    let dir = std::env::temp_dir().join(format!("ccs-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ledger_path = dir.join("ledger.json");
    let emu = Emulator::start(&["--unregistered", "gone-token"], &ledger_path);

    let input = concat!(
        "{\"to\":\"tok-1\",\"data\":{\"a\":\"b\"}}\n",
        "this is not json\n",
        "{\"to\":\"gone-token\",\"message_id\":\"mine-2\"}\n",
        "\n",
        "{\"to\":\"tok-3\",\"time_to_live\":99999999}\n",
        "{\"message_id\":\"no-to\"}\n",
        "{\"to\":\"tok-5\",\"message_id\":\"mine-5\",\"delivery_receipt_requested\":true}\n",
    );
    let (code, out) = send(&emu, input, &[]);
    assert_eq!(code, 1, "not every message was acked");
    let by_line = |n: u64| out.iter().find(|v| v["line"] == n).unwrap().clone();
    assert_eq!(out.len(), 6, "one outcome per non-empty line: {out:?}");
    assert_eq!(by_line(1)["result"], "acked");
    assert!(
        by_line(1)["id"].as_str().unwrap().ends_with("-1"),
        "a message_id was filled in"
    );
    assert_eq!(by_line(2)["result"], "invalid");
    assert!(by_line(2)["error"].as_str().unwrap().contains("JSON"));
    assert_eq!(by_line(3)["result"], "nacked");
    assert_eq!(by_line(3)["code"], "DEVICE_UNREGISTERED");
    assert_eq!(by_line(3)["id"], "mine-2");
    assert_eq!(
        by_line(5)["result"],
        "invalid",
        "a TTL out of range cannot be built"
    );
    assert_eq!(by_line(6)["result"], "nacked");
    assert_eq!(by_line(6)["code"], "INVALID_JSON");
    assert_eq!(by_line(7)["result"], "acked");

    let (code, out) = send(&emu, "{\"to\":\"tok\"}\n{\"to\":\"tok\"}\n", &[]);
    assert_eq!(code, 0);
    assert!(out.iter().all(|v| v["result"] == "acked"));

    emu.stop();
    let ledger: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ledger_path).unwrap()).unwrap();
    assert_eq!(ledger["total"]["acked"], 4);
    assert_eq!(ledger["total"]["nacked"]["DEVICE_UNREGISTERED"], 1);
    assert_eq!(ledger["total"]["nacked"]["INVALID_JSON"], 1);
    assert_eq!(ledger["total"]["window_violations"], 0);
    assert_eq!(ledger["total"]["never_answered"], 0);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn wrong_key_is_an_error_a_person_can_act_on() {
    let dir = std::env::temp_dir().join(format!("ccs-cli-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let emu = Emulator::start(&[], &dir.join("l.json"));
    let out = Command::new(BIN)
        .args(["send", "--sender-id", "42", "--server-name", "localhost"])
        .args(["--endpoint", &emu.addr, "--ca-file", &emu.cert])
        .env("CCS_API_KEY", "wrong")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server key"), "{err}");
    emu.stop();
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_key_never_comes_from_argv() {
    let out = Command::new(BIN)
        .args(["send", "--sender-id", "42", "--api-key", "secret"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = Command::new(BIN)
        .args(["send", "--sender-id", "42", "--endpoint", "127.0.0.1:1"])
        .env_remove("CCS_API_KEY")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CCS_API_KEY"));
}

/// Runs `ccs bench` with these arguments (and `--json`), expects success, and gives its one
/// JSON line.
fn bench_json(args: &[&str], tmpdir: Option<&std::path::Path>) -> serde_json::Value {
    let mut cmd = Command::new(BIN);
    cmd.arg("bench").args(args).arg("--json");
    if let Some(dir) = tmpdir {
        cmd.env("TMPDIR", dir);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(String::from_utf8(out.stdout).unwrap().trim()).unwrap()
}

#[test]
fn bench_finishes_with_sane_figures_and_leaves_no_file_behind() {
    // Its own temporary directory: the emulator's certificate goes there, and must be gone.
    let tmp = std::env::temp_dir().join(format!("ccs-cli-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let v = bench_json(&["--count", "3000"], Some(&tmp));
    assert_eq!(v["sent"], 3000);
    assert_eq!(v["acked"], 3000);
    assert_eq!(v["nacked"], 0);
    assert!(v["msgs_per_s"].as_f64().unwrap() > 100.0);
    assert!(v["client_cpu_us_per_msg"].as_f64().unwrap() > 0.0);
    assert!(v["peak_rss_kib"].as_u64().unwrap() > 1000);
    assert!(
        v["peak_rss_kib_after_1m"].is_null(),
        "a run shorter than the checkpoint has no figure for it"
    );
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    std::fs::remove_dir(&tmp).unwrap();
}

#[test]
fn bench_accounts_for_every_message_one_at_a_time_and_with_a_short_last_batch() {
    // `--batch 1`: one `enqueue` per message; `--batch 7` of 500: 71 batches and one of 3.
    for batch in ["1", "7"] {
        let v = bench_json(&["--count", "500", "--batch", batch], None);
        assert_eq!(v["sent"], 500, "--batch {batch}: {v}");
        assert_eq!(v["acked"], 500, "--batch {batch}: {v}");
    }
}

#[test]
fn bench_rounds_report_medians_with_the_ceiling_ratio_of_each_round() {
    let v = bench_json(&["--count", "500", "--rounds", "3", "--ceiling"], None);
    assert_eq!(v["rounds"], 3);
    assert_eq!(v["acked"], 500, "every round acked every message");
    let rate = v["msgs_per_s"].as_f64().unwrap();
    // Three rounds really ran, and the figure is their median.
    let mut per_round: Vec<f64> = v["msgs_per_s_per_round"]
        .as_array()
        .expect("one figure per round")
        .iter()
        .map(|r| r.as_f64().unwrap())
        .collect();
    assert_eq!(per_round.len(), 3, "{v}");
    per_round.sort_by(f64::total_cmp);
    assert!(
        (rate - per_round[1]).abs() <= 1.0,
        "the median of {per_round:?}: {v}"
    );
    let ceiling = v["ceiling_msgs_per_s"].as_f64().unwrap();
    let of = v["of_ceiling"].as_f64().unwrap();
    assert!(rate > 0.0 && ceiling > 0.0 && of > 0.0, "{v}");
    let zero = Command::new(BIN)
        .args(["bench", "--rounds", "0"])
        .output()
        .unwrap();
    assert_eq!(zero.status.code(), Some(2), "clap refuses zero rounds");
}

#[test]
fn bench_takes_the_peak_rss_at_the_checkpoint_of_a_long_enough_run() {
    let v = bench_json(&["--count", "3000", "--rss-checkpoint", "2000"], None);
    assert_eq!(v["rss_checkpoint"], 2000);
    let at_checkpoint = v["peak_rss_kib_after_1m"]
        .as_u64()
        .expect("a figure at the checkpoint");
    let at_end = v["peak_rss_kib"].as_u64().unwrap();
    assert!(at_checkpoint > 1000, "{v}");
    assert!(at_checkpoint <= at_end, "a peak only grows: {v}");
}

#[test]
fn an_unreachable_server_is_retried_until_the_connect_timeout_then_reported() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = Command::new(BIN)
        .args(["send", "--sender-id", "42", "--connect-timeout", "1"])
        .args(["--endpoint", &format!("127.0.0.1:{port}")])
        .env("CCS_API_KEY", "k")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect"), "{err}");
    let bad = Command::new(BIN)
        .args(["send", "--sender-id", "42", "--connect-timeout", "0"])
        .env("CCS_API_KEY", "k")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "clap refuses a zero timeout");
}

#[test]
fn bench_prints_one_table_row_per_adapter_with_the_ceiling_ratio() {
    let out = Command::new(BIN)
        .args(["bench", "--count", "1000", "--runtime", "all", "--ceiling"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header[0], "runtime");
    let header = header.join(" ");
    for column in ["msgs/s", "% of ceiling", "CPU µs/msg"] {
        assert!(header.contains(column), "{header}");
    }
    for runtime in ["tokio", "smol", "async-std", "blocking"] {
        let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(row[0], runtime, "{text}");
        assert_eq!(row[1..5], ["1000", "1000", "0", "0"], "{text}");
        assert!(row[6].parse::<f64>().unwrap() > 0.0, "msgs/s: {text}");
        assert!(row[7].parse::<f64>().unwrap() > 0.0, "% of ceiling: {text}");
        assert_eq!(row[8], "%");
        assert!(row[9].parse::<f64>().unwrap() >= 0.0, "CPU: {text}");
    }
    let ceiling = lines.next().unwrap();
    assert!(ceiling.starts_with("ceiling: "), "{text}");
    // Its own CPU per message (what the client's is compared with), a number on Linux.
    let cpu = ceiling
        .split_once(" msgs/s, ")
        .and_then(|(_, rest)| rest.split_once(" µs CPU per message"))
        .map(|(cpu, _)| cpu.parse::<f64>());
    assert!(matches!(cpu, Some(Ok(c)) if c >= 0.0), "{ceiling}");
}
