//! `ccs bench`: throughput, client CPU time and peak memory against an endpoint; by default
//! against an emulator started in a separate process, so the client is measured alone.

use std::collections::VecDeque;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, ExitCode, Stdio};
use std::time::{Duration, Instant};

use ccs_proto::client::SendErrorKind;
use ccs_proto::credentials::{SenderId, ServerKey};
use ccs_proto::message::Downstream;
use ccs_tokio::{Client, Config, Endpoint};
use clap::Args;
use serde_json::json;

use crate::common::KEY_ENV;

/// Flags of `ccs bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// HOST:PORT or preset of the server to measure against. Default: start an emulator in a
    /// separate process (`ccs emulate`) and use it.
    #[arg(long)]
    endpoint: Option<String>,
    /// Extra CA certificate (PEM) to trust. Repeatable.
    #[arg(long = "ca-file")]
    ca_files: Vec<PathBuf>,
    /// The name the server's certificate must carry (default: the endpoint's host).
    #[arg(long)]
    server_name: Option<String>,
    /// The sender id (with --endpoint). Also read from CCS_SENDER_ID.
    #[arg(long, env = "CCS_SENDER_ID")]
    sender_id: Option<String>,
    /// A file holding the server key (with --endpoint); else CCS_API_KEY.
    #[arg(long)]
    api_key_file: Option<PathBuf>,
    /// Messages to send.
    #[arg(long, default_value_t = 100_000)]
    count: usize,
    /// Downstream messages in flight per connection (1..=1000).
    #[arg(long, default_value_t = 100)]
    window: usize,
    /// Connections.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Print one JSON line instead of a table.
    #[arg(long)]
    json: bool,
}

/// An emulator process, killed on drop.
struct EmulatorProcess(Child);

impl Drop for EmulatorProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const BENCH_SENDER: &str = "100000000001";

fn start_emulator(window: usize) -> Result<(EmulatorProcess, String, PathBuf), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the ccs binary: {e}"))?;
    let cert = std::env::temp_dir().join(format!("ccs-bench-{}.pem", std::process::id()));
    let mut child = std::process::Command::new(exe)
        .args([
            "emulate",
            "--json",
            "--no-track-ids",
            "--sender-id",
            BENCH_SENDER,
        ])
        .arg("--window")
        .arg(window.to_string())
        .arg("--cert-out")
        .arg(&cert)
        .env(KEY_ENV, "bench-key")
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the emulator: {e}"))?;
    let stdout = child.stdout.take().ok_or("the emulator has no stdout")?;
    let process = EmulatorProcess(child);
    let mut first = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut first)
        .map_err(|e| format!("cannot read the emulator's address: {e}"))?;
    let v: serde_json::Value = serde_json::from_str(&first)
        .map_err(|e| format!("unexpected first line from the emulator `{first}`: {e}"))?;
    let addr = v["listening"]
        .as_str()
        .ok_or("the emulator did not say where it listens")?
        .to_owned();
    Ok((process, addr, cert))
}

/// User + system CPU time of this process, from /proc (Linux).
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line; here indices 11 and 12.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(Duration::from_millis(ticks * 10))
}

/// Peak resident set size of this process in KiB, from /proc (Linux).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Runs the benchmark.
pub(crate) async fn run(args: BenchArgs) -> Result<ExitCode, String> {
    let mut _emulator = None;
    let mut config = match &args.endpoint {
        Some(endpoint) => {
            let creds = crate::common::CredArgs {
                sender_id: args
                    .sender_id
                    .clone()
                    .ok_or("--sender-id (or CCS_SENDER_ID) is needed with --endpoint")?,
                api_key_file: args.api_key_file.clone(),
            };
            let (sender, key) = creds.load()?;
            let mut c = Config::new(Endpoint::parse(endpoint)?, sender, key);
            c.tls.ca_files = args.ca_files.clone();
            c.tls.server_name = args.server_name.clone();
            c
        }
        None => {
            let (process, addr, cert) = start_emulator(args.window)?;
            _emulator = Some(process);
            let mut c = Config::new(
                Endpoint::parse(&addr)?,
                SenderId::new(BENCH_SENDER).map_err(|e| e.to_string())?,
                ServerKey::new("bench-key").map_err(|e| e.to_string())?,
            );
            c.tls.ca_files = vec![cert];
            c.tls.server_name = Some("localhost".into());
            c.tls.only_extra_roots = true;
            c
        }
    };
    config.client.connection.window = args.window;
    config.client.connections = args.connections;
    config.client.max_queue = (args.window * args.connections * 4).max(1000);
    let client = Client::connect(config).await.map_err(|e| e.to_string())?;

    let token =
        "fKx3Zq7nRbGf:APA91bHPRgkF3JUikC4ENAHEeMrd41Zxv3hVZjC9KtT8OvPVGJ-hQMRKRrZuJAEcl7B338q";
    let run_id = std::process::id();
    let message = |i: usize| {
        Downstream::builder(token, format!("b{run_id}-{i}"))
            .and_then(|b| b.data(json!({"seq": i.to_string()})))
            .map(|b| b.build())
            .map_err(|e| e.to_string())
    };
    let cpu0 = cpu_time();
    let start = Instant::now();
    let (mut acked, mut nacked, mut other) = (0usize, 0usize, 0usize);
    let mut pending = VecDeque::new();
    let mut tally = |r: Result<ccs_proto::client::Outcome, ccs_tokio::SendError>| match r {
        Ok(o) if o.is_acked() => acked += 1,
        Ok(ccs_proto::client::Outcome::Nacked { .. }) => nacked += 1,
        _ => other += 1,
    };
    for i in 0..args.count {
        let mut m = message(i)?;
        loop {
            match client.try_send(m) {
                Ok(p) => {
                    pending.push_back(p);
                    break;
                }
                Err(e) if matches!(e.kind, SendErrorKind::QueueFull { .. }) => {
                    m = *e.message.ok_or("the client stopped")?;
                    match pending.pop_front() {
                        Some(p) => tally(p.await),
                        None => tokio::task::yield_now().await,
                    }
                }
                Err(e) => return Err(format!("send refused: {e}")),
            }
        }
    }
    while let Some(p) = pending.pop_front() {
        tally(p.await);
    }
    let elapsed = start.elapsed();
    let cpu = cpu0.zip(cpu_time()).map(|(a, b)| b.saturating_sub(a));
    client.close(Duration::from_secs(5)).await;
    let rate = args.count as f64 / elapsed.as_secs_f64();
    let cpu_us = cpu.map(|c| c.as_secs_f64() * 1e6 / args.count as f64);
    let rss = peak_rss_kib();
    if args.json {
        println!(
            "{}",
            json!({
                "sent": args.count, "acked": acked, "nacked": nacked, "other": other,
                "msgs_per_s": rate.round(), "elapsed_s": elapsed.as_secs_f64(),
                "client_cpu_us_per_msg": cpu_us, "peak_rss_kib": rss,
                "window": args.window, "connections": args.connections,
            })
        );
    } else {
        println!("sent                  {}", args.count);
        println!("acked                 {acked}");
        println!("nacked                {nacked}");
        println!("other outcomes        {other}");
        println!("elapsed               {:.3} s", elapsed.as_secs_f64());
        println!("messages per second   {rate:.0}");
        match cpu_us {
            Some(c) => println!("client CPU per msg    {c:.2} µs"),
            None => println!("client CPU per msg    (unknown)"),
        }
        match rss {
            Some(r) => println!("client peak RSS       {r} KiB"),
            None => println!("client peak RSS       (unknown)"),
        }
    }
    Ok(if acked == args.count {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
