//! `ccs bench`: throughput, client CPU time and peak memory against an endpoint; by default
//! against an emulator started in a separate process, so the client is measured alone.

use std::collections::VecDeque;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, ExitCode, Stdio};
use std::time::{Duration, Instant};

use ccs_net::{Config, Endpoint};
use ccs_proto::credentials::{SenderId, ServerKey};
use ccs_proto::message::Downstream;
use clap::Args;
use serde_json::json;

use crate::common::{KEY_ENV, queue_limit};
use crate::runtime::{BenchRuntime, Runtime};

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
    /// Messages queued together (`enqueue_batch`: one command and one wake-up per stretch
    /// of queue room, one wake-up per batch of outcomes), as a bulk sender would. 1: one
    /// message at a time (`enqueue`, one outcome future each).
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Print one JSON line instead of a table.
    #[arg(long)]
    json: bool,
    /// Also measure the ceiling: a bare TLS pipe writing the same pre-encoded stanzas to the
    /// same server (one connection, the same window).
    #[arg(long)]
    ceiling: bool,
    /// The adapter that carries the client's IO; `all` runs every adapter, one after the
    /// other, against the same server in one run.
    #[arg(long, value_enum, default_value = "tokio")]
    runtime: BenchRuntime,
    /// Rounds: the ceiling (with --ceiling) and every adapter, alternating, this many times;
    /// each figure printed is the median over the rounds, and each ratio to the ceiling the
    /// median of the ratios within a round. On a shared or small machine single runs move by
    /// 20 % and more; alternating rounds compare like with like.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
    /// Take the `peak_rss_kib_after_1m` figure after this many outcomes instead (for tests
    /// of the figure itself; JSON: `rss_checkpoint`).
    #[arg(long, hide = true, default_value_t = RSS_CHECKPOINT)]
    rss_checkpoint: usize,
}

/// One adapter's run.
struct RunFigures {
    acked: usize,
    nacked: usize,
    other: usize,
    elapsed: Duration,
    cpu: Option<Duration>,
    /// Peak RSS of the process (KiB) once the checkpoint's outcomes ([`RSS_CHECKPOINT`] by
    /// default) had come, in runs that long.
    rss_at_checkpoint: Option<u64>,
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

/// The figures of a long run are also taken after this many outcomes: memory must stay flat
/// from here on.
const RSS_CHECKPOINT: usize = 1_000_000;

/// Stanzas the ceiling encodes before it starts (it cycles through them): enough to hold a
/// window of distinct ids many times over, few enough that a long run does not hold every
/// stanza in memory.
const CEILING_STANZAS: usize = 65_536;

/// Removes a file when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Starts `ccs emulate` in a separate process; returns it, its address and its certificate
/// (PEM). The emulator writes the certificate to a file, which is read and removed at once.
fn start_emulator(window: usize) -> Result<(EmulatorProcess, String, String), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the ccs binary: {e}"))?;
    let cert = std::env::temp_dir().join(format!("ccs-bench-{}.pem", std::process::id()));
    // Dropped after the process on every way out of here (killed first on an error, so it
    // cannot write the file afterwards).
    let cert_file = RemoveOnDrop(cert.clone());
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
    // Written before the emulator printed its address.
    let pem = std::fs::read_to_string(&cert_file.0)
        .map_err(|e| format!("cannot read the emulator's certificate: {e}"))?;
    drop(cert_file);
    Ok((process, addr, pem))
}

/// Message `i` of a run: a 90-byte token, an id, a one-key `data` object, built the way an
/// application would (no `json!` round trip). The client run and the ceiling send the same
/// messages.
fn bench_message(prefix: &str, i: usize) -> Result<Downstream, String> {
    const TOKEN: &str =
        "fKx3Zq7nRbGf:APA91bHPRgkF3JUikC4ENAHEeMrd41Zxv3hVZjC9KtT8OvPVGJ-hQMRKRrZuJAEcl7B338q";
    let mut data = serde_json::Map::with_capacity(1);
    data.insert("seq".into(), serde_json::Value::String(i.to_string()));
    Downstream::builder(TOKEN, format!("{prefix}-{i}"))
        .map(|b| b.data_object(data).build())
        .map_err(|e| e.to_string())
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
            let (process, addr, pem) = start_emulator(args.window)?;
            _emulator = Some(process);
            let mut c = Config::new(
                Endpoint::parse(&addr)?,
                SenderId::new(BENCH_SENDER).map_err(|e| e.to_string())?,
                ServerKey::new("bench-key").map_err(|e| e.to_string())?,
            );
            c.tls.ca_pem = vec![pem];
            c.tls.server_name = Some("localhost".into());
            c.tls.only_extra_roots = true;
            c
        }
    };
    config.client.connection.window = args.window;
    config.client.connections = args.connections;
    config.client.max_queue = queue_limit(args.window, args.connections);
    let batch = args.batch.max(1);
    let runtimes = args.runtime.runtimes();
    let mut ceilings = Vec::new();
    let mut rounds: Vec<Vec<RunFigures>> = runtimes.iter().map(|_| Vec::new()).collect();
    for round in 0..args.rounds {
        if args.ceiling {
            ceilings.push(ceiling(&config, args.count, args.window).await?);
        }
        for (n, &runtime) in runtimes.iter().enumerate() {
            let prefix = format!("b{}-{round}-{n}", std::process::id());
            let run = Run {
                count: args.count,
                batch,
                checkpoint: args.rss_checkpoint,
                prefix: &prefix,
            };
            rounds[n].push(measure(runtime, config.clone(), run).await?);
        }
    }
    let ceiling = median(ceilings.iter().map(|c| Some(c.msgs_per_s)));
    let ceiling_cpu = median(ceilings.iter().map(|c| c.cpu_us_per_msg));
    let runs: Vec<Summary> = runtimes
        .iter()
        .zip(&rounds)
        .map(|(&runtime, figures)| Summary::new(runtime, figures, args.count, &ceilings))
        .collect();
    // The kernel's high-water mark is updated lazily: read after the resident set shrank,
    // it can be below a figure read earlier. The peak is at least every figure seen.
    let rss = peak_rss_kib().map(|now| {
        runs.iter()
            .filter_map(|r| r.rss_at_checkpoint)
            .fold(now, u64::max)
    });
    if args.json {
        for r in &runs {
            println!(
                "{}",
                json!({
                    "runtime": r.runtime.name(),
                    "sent": args.count, "acked": r.acked, "nacked": r.nacked, "other": r.other,
                    "msgs_per_s": r.rate.round(), "elapsed_s": r.elapsed_s,
                    "client_cpu_us_per_msg": r.cpu_us, "peak_rss_kib": rss,
                    "peak_rss_kib_after_1m": r.rss_at_checkpoint,
                    "window": args.window, "connections": args.connections, "batch": batch,
                    "rounds": args.rounds, "msgs_per_s_per_round": r.rates,
                    "rss_checkpoint": args.rss_checkpoint,
                    "ceiling_msgs_per_s": ceiling.map(f64::round),
                    "of_ceiling": r.of_ceiling,
                    "ceiling_cpu_us_per_msg": ceiling_cpu,
                    "cpu_of_ceiling": r.cpu_of_ceiling,
                })
            );
        }
    } else {
        print!("{}", table(&runs, args.count));
        if args.rounds > 1 {
            println!(
                "medians of {} rounds (the ceiling and each adapter in turn, every round)",
                args.rounds
            );
        }
        match ceiling {
            Some(c) => println!(
                "ceiling: {c:.0} msgs/s, {} µs CPU per message (a bare TLS pipe, one \
                 connection, window {})",
                ceiling_cpu.map_or("?".to_owned(), |u| format!("{u:.2}")),
                args.window
            ),
            None => println!("ceiling: not measured (--ceiling)"),
        }
        for r in &runs {
            if let Some(kib) = r.rss_at_checkpoint {
                println!(
                    "client peak RSS after {} messages ({}): {kib} KiB",
                    args.rss_checkpoint,
                    r.runtime.name()
                );
            }
        }
        match rss {
            Some(r) => {
                println!("client peak RSS after all: {r} KiB (the whole process, every run)")
            }
            None => println!("client peak RSS: (unknown)"),
        }
    }
    Ok(if runs.iter().all(|r| r.acked == args.count) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// One adapter's figures over the rounds: medians, and the ratios to the ceiling taken
/// within each round (the ceiling of the same round) before the median.
struct Summary {
    runtime: Runtime,
    /// The fewest acked in any round (every round must ack every message).
    acked: usize,
    /// The most nacked, or otherwise ended, in any round.
    nacked: usize,
    other: usize,
    elapsed_s: f64,
    rate: f64,
    /// Messages per second in each round, in order (the spread behind `rate`).
    rates: Vec<f64>,
    of_ceiling: Option<f64>,
    cpu_us: Option<f64>,
    cpu_of_ceiling: Option<f64>,
    rss_at_checkpoint: Option<u64>,
}

impl Summary {
    fn new(runtime: Runtime, rounds: &[RunFigures], count: usize, ceilings: &[Ceiling]) -> Self {
        let count = count as f64;
        let rate = |r: &RunFigures| count / r.elapsed.as_secs_f64();
        let cpu_us = |r: &RunFigures| r.cpu.map(|c| c.as_secs_f64() * 1e6 / count);
        let paired = || rounds.iter().zip(ceilings);
        Self {
            runtime,
            acked: rounds.iter().map(|r| r.acked).min().unwrap_or(0),
            nacked: rounds.iter().map(|r| r.nacked).max().unwrap_or(0),
            other: rounds.iter().map(|r| r.other).max().unwrap_or(0),
            elapsed_s: median(rounds.iter().map(|r| Some(r.elapsed.as_secs_f64()))).unwrap_or(0.0),
            rate: median(rounds.iter().map(|r| Some(rate(r)))).unwrap_or(0.0),
            rates: rounds.iter().map(|r| rate(r).round()).collect(),
            of_ceiling: median(paired().map(|(r, c)| Some(rate(r) / c.msgs_per_s))),
            cpu_us: median(rounds.iter().map(cpu_us)),
            cpu_of_ceiling: median(paired().map(|(r, c)| {
                // A ceiling too short for the 10 ms CPU clock has no ratio.
                let ceiling = c.cpu_us_per_msg.filter(|&b| b > 0.0);
                cpu_us(r).zip(ceiling).map(|(a, b)| a / b)
            })),
            rss_at_checkpoint: rounds.iter().filter_map(|r| r.rss_at_checkpoint).max(),
        }
    }
}

/// The median of the values, `None` if there are none or any is unknown.
fn median(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let mut v: Vec<f64> = values.collect::<Option<_>>()?;
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// The table of the runs: one row per adapter.
fn table(runs: &[Summary], count: usize) -> String {
    use std::fmt::Write;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{:<10} {:>9} {:>9} {:>7} {:>7} {:>10} {:>10} {:>12} {:>11}",
        "runtime",
        "sent",
        "acked",
        "nacked",
        "other",
        "elapsed s",
        "msgs/s",
        "% of ceiling",
        "CPU µs/msg"
    );
    for r in runs {
        let of_ceiling = match r.of_ceiling {
            Some(c) => format!("{:.0} %", 100.0 * c),
            None => "-".to_owned(),
        };
        let cpu = match r.cpu_us {
            Some(c) => format!("{c:.2}"),
            None => "?".to_owned(),
        };
        let _ = writeln!(
            t,
            "{:<10} {:>9} {:>9} {:>7} {:>7} {:>10.3} {:>10.0} {:>12} {:>11}",
            r.runtime.name(),
            count,
            r.acked,
            r.nacked,
            r.other,
            r.elapsed_s,
            r.rate,
            of_ceiling,
            cpu
        );
    }
    t
}

/// What one adapter's run sends.
struct Run<'a> {
    count: usize,
    batch: usize,
    /// Outcomes after which the peak RSS is taken.
    checkpoint: usize,
    prefix: &'a str,
}

/// Sends `count` messages through one adapter, keeping the queue full, and counts outcomes:
/// in batches of `batch` messages, or one at a time if `batch` is 1.
async fn measure(runtime: Runtime, config: Config, run: Run<'_>) -> Result<RunFigures, String> {
    let Run {
        count,
        batch,
        checkpoint,
        prefix,
    } = run;
    let client = runtime.connect(config).await?;
    let cpu0 = cpu_time();
    let start = Instant::now();
    let mut tally = Tally {
        checkpoint,
        ..Tally::default()
    };
    if batch <= 1 {
        one_at_a_time(&client, count, prefix, &mut tally).await?;
    } else {
        in_batches(&client, count, batch, prefix, &mut tally).await?;
    }
    let elapsed = start.elapsed();
    let cpu = cpu0.zip(cpu_time()).map(|(a, b)| b.saturating_sub(a));
    client.close(Duration::from_secs(5)).await;
    Ok(RunFigures {
        acked: tally.acked,
        nacked: tally.nacked,
        other: tally.other,
        elapsed,
        cpu,
        rss_at_checkpoint: tally.rss_at_checkpoint,
    })
}

/// `enqueue` per message; outcomes taken in order as they come. `enqueue` waits while the
/// queue is full, so at most the queue plus the messages on the wire are pending at once.
async fn one_at_a_time(
    client: &ccs_net::Handle,
    count: usize,
    prefix: &str,
    tally: &mut Tally,
) -> Result<(), String> {
    let mut pending = VecDeque::new();
    for i in 0..count {
        let p = client
            .enqueue(bench_message(prefix, i)?, false)
            .await
            .map_err(|e| format!("send refused: {e}"))?;
        pending.push_back(p);
        take_ready(&mut pending, |r| tally.add(r));
    }
    for p in pending {
        tally.add(p.await);
    }
    Ok(())
}

/// `enqueue_batch` per `batch` messages; batches taken in order as they complete. Each
/// returns once its messages are queued, so at most the queue plus the messages on the wire
/// (and one batch) are pending at once.
async fn in_batches(
    client: &ccs_net::Handle,
    count: usize,
    batch: usize,
    prefix: &str,
    tally: &mut Tally,
) -> Result<(), String> {
    let mut pending = VecDeque::new();
    for start in (0..count).step_by(batch) {
        let messages = (start..count.min(start + batch))
            .map(|i| bench_message(prefix, i))
            .collect::<Result<Vec<_>, _>>()?;
        pending.push_back(client.enqueue_batch(messages, false).await);
        take_ready(&mut pending, |outcomes| {
            outcomes.into_iter().for_each(|r| tally.add(r));
        });
    }
    for b in pending {
        b.await.into_iter().for_each(|r| tally.add(r));
    }
    Ok(())
}

/// Hands the outputs of the oldest `pending` futures that are complete to `take`, oldest
/// first, stopping at the first that is not (without waiting for it).
fn take_ready<F: std::future::Future + Unpin>(
    pending: &mut VecDeque<F>,
    mut take: impl FnMut(F::Output),
) {
    while let Some(output) = pending.front_mut().and_then(poll_once) {
        pending.pop_front();
        take(output);
    }
}

/// The outcomes of a run so far.
#[derive(Debug, Default)]
struct Tally {
    acked: usize,
    nacked: usize,
    other: usize,
    /// Outcomes after which `rss_at_checkpoint` is taken.
    checkpoint: usize,
    rss_at_checkpoint: Option<u64>,
}

impl Tally {
    fn add(&mut self, r: Result<ccs_proto::client::Outcome, ccs_net::SendError>) {
        match r {
            Ok(o) if o.is_acked() => self.acked += 1,
            Ok(o) if o.nack().is_some() => self.nacked += 1,
            _ => self.other += 1,
        }
        if self.acked + self.nacked + self.other == self.checkpoint {
            self.rss_at_checkpoint = peak_rss_kib();
        }
    }
}

/// The future's output if it is ready, without waiting.
fn poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::Pin::new(f).poll(&mut cx) {
        std::task::Poll::Ready(r) => Some(r),
        std::task::Poll::Pending => None,
    }
}

/// The ceiling: a bare TLS pipe that authenticates with the core, then writes pre-encoded
/// downstream stanzas to the same server, keeping `window` unanswered, and counts acks by
/// searching the raw bytes (no parsing). Returns messages per second.
pub(crate) async fn ceiling(
    config: &Config,
    count: usize,
    window: usize,
) -> Result<Ceiling, String> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use ccs_proto::connection::{ConnId, Connection, State};
    use ccs_proto::xml::write;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (connector, name) = ccs_tokio::tls_connector(&config.endpoint, &config.tls)?;
    let tcp = tokio::net::TcpStream::connect((config.endpoint.host.as_str(), config.endpoint.port))
        .await
        .map_err(|e| format!("ceiling: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("ceiling TLS: {e}"))?;
    let mut conn = Connection::new(ConnId(0), config.client.connection.clone(), Instant::now())
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while let Some(b) = conn.poll_transmit() {
            tls.write_all(&b).await.map_err(|e| e.to_string())?;
        }
        tls.flush().await.map_err(|e| e.to_string())?;
        match conn.state() {
            State::Connected => break,
            State::Closed => return Err("ceiling: the stream closed during setup".into()),
            _ => {}
        }
        let n = tls.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("ceiling: the server closed during setup".into());
        }
        conn.handle_input(Instant::now(), &buf[..n]);
    }
    // Encoded before the clock starts, and sent round and round (the emulator does not
    // track ids in a benchmark): a long run holds a bounded number of stanzas in memory.
    let distinct = count.clamp(1, CEILING_STANZAS);
    let mut stanzas = Vec::with_capacity(distinct * 220);
    let mut ends = Vec::with_capacity(distinct + 1);
    ends.push(0);
    let prefix = format!("c{}", std::process::id());
    for i in 0..distinct {
        let m = bench_message(&prefix, i)?;
        write::downstream(&mut stanzas, &m).map_err(|e| e.to_string())?;
        ends.push(stanzas.len());
    }
    let (mut rd, mut wr) = tokio::io::split(tls);
    let acked = Arc::new(AtomicUsize::new(0));
    let notify = Arc::new(tokio::sync::Notify::new());
    let reader = {
        let (acked, notify) = (acked.clone(), notify.clone());
        tokio::spawn(async move {
            const ACK: &[u8] = br#""message_type":"ack""#;
            let finder = memchr::memmem::Finder::new(ACK);
            let mut carry: Vec<u8> = Vec::new();
            let mut buf = vec![0u8; 256 * 1024];
            while acked.load(Ordering::Acquire) < count {
                let n = match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                carry.extend_from_slice(&buf[..n]);
                let found = finder.find_iter(&carry).count();
                let keep = carry.len().saturating_sub(ACK.len() - 1);
                carry.drain(..keep);
                acked.fetch_add(found, Ordering::AcqRel);
                notify.notify_one();
            }
        })
    };
    let start = Instant::now();
    let cpu_start = cpu_time();
    let mut sent = 0;
    while sent < count {
        let allow = (acked.load(Ordering::Acquire) + window).min(count);
        if allow > sent {
            while sent < allow {
                // Stanzas `sent..allow`, cycling through the encoded ones.
                let first = sent % distinct;
                let last = distinct.min(first + (allow - sent));
                wr.write_all(&stanzas[ends[first]..ends[last]])
                    .await
                    .map_err(|e| e.to_string())?;
                sent += last - first;
            }
            wr.flush().await.map_err(|e| e.to_string())?;
        } else {
            notify.notified().await;
        }
    }
    reader.await.map_err(|e| e.to_string())?;
    let elapsed = start.elapsed();
    let cpu = cpu_start.zip(cpu_time()).map(|(a, b)| b.saturating_sub(a));
    if acked.load(Ordering::Acquire) < count {
        return Err("ceiling: the server stopped answering".into());
    }
    Ok(Ceiling {
        msgs_per_s: count as f64 / elapsed.as_secs_f64(),
        cpu_us_per_msg: cpu.map(|c| c.as_secs_f64() * 1e6 / count as f64),
    })
}

/// What the ceiling measured: its rate, and the CPU time of this process per message while
/// it ran (the bare pipe's own cost: TLS, syscalls, counting acks).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ceiling {
    pub(crate) msgs_per_s: f64,
    pub(crate) cpu_us_per_msg: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even_counts_and_of_unknowns() {
        assert_eq!(median([3.0, 1.0, 2.0].map(Some).into_iter()), Some(2.0));
        assert_eq!(
            median([4.0, 1.0, 3.0, 2.0].map(Some).into_iter()),
            Some(2.5)
        );
        assert_eq!(median([7.0].map(Some).into_iter()), Some(7.0));
        assert_eq!(median(std::iter::empty()), None);
        assert_eq!(median([Some(1.0), None, Some(2.0)].into_iter()), None);
    }
}
