//! `ccs demo`: the whole system in one process. The emulator plays CCS; the echo app server
//! (`echo.rs`, built on the library as an application would be) connects to it with manual
//! acks; a simulated fleet of devices sends upstream messages through the emulator and
//! expects each one back as a downstream message, with a delivery receipt requested. At the
//! end the emulator's ledger and the client's close report are checked against the promise:
//! every upstream message acked once and echoed (one distinct echo each), every echo acked,
//! every receipt acked, nothing left unanswered or un-acked. The exit status says whether it
//! held.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ccs_emulator::{DEFAULT_SENDER_ID, DEFAULT_SERVER_KEY, Emulator, EmulatorConfig, Ledger};
use ccs_proto::credentials::{SenderId, ServerKey};
use ccs_proto::message::MessageId;
use clap::Args;
use serde_json::{Map, json};

use crate::echo::{self, EchoStats};
use crate::runtime::Runtime;

/// Flags of `ccs demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Simulated devices sending upstream messages (round robin).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    devices: u64,
    /// Upstream messages the fleet sends in all.
    #[arg(long, default_value_t = 10_000)]
    count: u64,
    /// Stop sending after this many seconds (the messages sent by then are still checked).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Make the server drain every connection (CONNECTION_DRAINING) after every N upstream
    /// messages sent.
    #[arg(long, value_name = "N")]
    drain_every: Option<u64>,
    /// The chance, for each stanza the server writes, that it kills the connection at a
    /// random byte of it (mid-stanza), without a TLS close.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    fault_rate: f64,
    /// Upstream messages in the air at once (sent by devices, not yet acked).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    in_flight: u64,
    /// Seconds to wait, once the fleet stops, for everything to be answered.
    #[arg(long, default_value_t = 60)]
    settle_timeout: u64,
    /// The seed of the server's random choices (faults), for a run that repeats.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The adapter that carries the client's IO.
    #[arg(long, value_enum, default_value = "tokio")]
    runtime: Runtime,
    /// Print the summary as one JSON object (and no progress).
    #[arg(long)]
    json: bool,
    /// Write the emulator's final ledger (JSON) here, to see what the server saw.
    #[arg(long, value_name = "PATH")]
    ledger: Option<std::path::PathBuf>,
}

/// Runs the demo.
pub(crate) async fn run(args: DemoArgs) -> Result<ExitCode, String> {
    if !(0.0..=1.0).contains(&args.fault_rate) {
        return Err(format!("--fault-rate {} is not in 0..=1", args.fault_rate));
    }
    let mut config = EmulatorConfig::new(
        SenderId::new(DEFAULT_SENDER_ID).map_err(|e| e.to_string())?,
        ServerKey::new(DEFAULT_SERVER_KEY).map_err(|e| e.to_string())?,
    );
    config.seed = args.seed;
    config.upstream_after_bind = Duration::ZERO;
    config.faults.drop_probability = args.fault_rate;
    let emu = Emulator::start(config).await.map_err(|e| e.to_string())?;
    let client = args
        .runtime
        .connect(emu.client_config().manual_acks())
        .await?;
    let upstream = client.upstream().ok_or("the upstream stream was taken")?;
    let stats = Arc::new(EchoStats::default());
    let links = Arc::new(Links::default());
    links.up.store(1, Ordering::Relaxed);
    tokio::spawn(watch(client.events(), Arc::clone(&links)));
    let server = tokio::spawn(echo::serve(client.clone(), upstream, Arc::clone(&stats)));
    let progress = Progress::new(!args.json, args.count, Arc::clone(&links));

    // The fleet: devices send upstream messages, at most `in_flight` un-acked at once.
    let start = Instant::now();
    let stop_at = args
        .duration
        .map(|d| start + Duration::from_secs_f64(d.max(0.0)));
    let mut sent: Vec<MessageId> = Vec::new();
    let mut drains = 0u64;
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    while (sent.len() as u64) < args.count && stop_at.is_none_or(|t| Instant::now() < t) {
        // Acked copies, redelivered ones included: at worst a few more in the air.
        let done = EchoStats::get(&stats.acked_messages);
        let room = args
            .in_flight
            .saturating_sub((sent.len() as u64).saturating_sub(done));
        let batch = room.min(args.count - sent.len() as u64);
        for _ in 0..batch {
            let n = sent.len() as u64;
            let mut data = Map::new();
            data.insert("seq".into(), json!(n.to_string()));
            sent.push(emu.inject_upstream_data(format!("device-{}", n % args.devices), data));
            if args
                .drain_every
                .is_some_and(|every| every > 0 && (n + 1).is_multiple_of(every))
            {
                emu.drain_all();
                drains += 1;
            }
        }
        progress.show(sent.len() as u64, &stats);
        // Paced by the echo server's progress, and at least ten times a second for the display.
        tokio::select! {
            () = stats.changed.notified() => {}
            _ = ticker.tick() => {
                if let Some(st) = client.stats().await {
                    links.up.store(st.sockets as u64, Ordering::Relaxed);
                }
            }
        }
    }
    let fleet_done = start.elapsed();

    // Settle: wait until the server has everything it should have.
    let n = sent.len();
    let echo_ids: Vec<String> = sent.iter().map(|id| format!("echo-{id}")).collect();
    let settled = tokio::time::timeout(
        Duration::from_secs(args.settle_timeout),
        emu.wait_until(|l| settled(l, n, &echo_ids)),
    )
    .await
    .is_ok();
    let elapsed = start.elapsed();
    progress.show(n as u64, &stats);
    progress.finish();
    let report = client.close(Duration::from_secs(5)).await;
    let _ = server.await;
    let ledger = emu.shutdown().await;
    if let Some(path) = &args.ledger {
        ledger
            .write_json(path)
            .map_err(|e| format!("cannot write the ledger to {}: {e}", path.display()))?;
    }

    let check = Check::new(&ledger, n, &echo_ids, settled, &report);
    let get = EchoStats::get;
    let summary = json!({
        "promise_held": check.held(),
        "problems": check.problems,
        "devices": args.devices,
        "upstream_sent": n,
        "upstream_acked": ledger.total.upstream_acked,
        "upstream_redelivered": ledger.total.redelivered,
        "echoes_distinct": check.echoes_distinct,
        "echoes_acked": check.echoes_acked,
        "echo_copies_on_the_wire": check.echo_copies,
        "receipts_sent": ledger.total.receipts_sent,
        "receipts_acked": ledger.total.receipts_acked,
        "echo_server": {
            "upstream_taken": get(&stats.upstream),
            "echoed": get(&stats.echoed),
            "echo_refused": get(&stats.echo_refused),
            "left_for_redelivery": get(&stats.echo_deferred),
            "receipts": get(&stats.receipts),
            "acks_refused": get(&stats.ack_refused),
        },
        "connections_opened": ledger.connections_opened,
        "close_reasons": ledger.close_reasons,
        "drains": drains,
        "unsent_at_close": report.unsent.len(),
        "unacked_upstream_at_close": report.unacked_upstream.len(),
        "seconds": elapsed.as_secs_f64(),
        "fleet_seconds": fleet_done.as_secs_f64(),
        "round_trips_per_s": (n as f64 / elapsed.as_secs_f64()).round(),
    });
    if args.json {
        println!("{summary}");
    } else {
        print_summary(&summary, &check);
    }
    Ok(if check.held() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Whether the server has seen the whole exchange for `n` upstream messages.
fn settled(l: &Ledger, n: usize, echo_ids: &[String]) -> bool {
    l.total.upstream_acked >= n as u64
        && l.upstream_queued == 0
        && echo_ids
            .iter()
            // Acked at least once: a later copy's CONNECTION_DRAINING nack does not undo it
            // (the latest answer alone would say so).
            .all(|id| l.ids.get(id).is_some_and(|r| r.acks > 0))
        && l.total.receipts_acked >= n as u64
}

/// The end-to-end promise, checked on the server's ledger and the client's close report.
struct Check {
    problems: Vec<String>,
    echoes_distinct: usize,
    echoes_acked: usize,
    echo_copies: u64,
}

impl Check {
    fn new(
        l: &Ledger,
        n: usize,
        echo_ids: &[String],
        settled: bool,
        report: &ccs_net::Report,
    ) -> Self {
        let mut problems = Vec::new();
        let mut echoes_distinct = 0;
        let mut echoes_acked = 0;
        let mut echo_copies = 0;
        for id in echo_ids {
            if let Some(r) = l.ids.get(id) {
                echoes_distinct += 1;
                echo_copies += u64::from(r.received);
                if r.acks > 0 {
                    echoes_acked += 1;
                }
            }
        }
        if !settled {
            problems.push("the exchange did not settle before --settle-timeout".to_owned());
        }
        if l.total.upstream_acked != n as u64 {
            problems.push(format!(
                "{} upstream messages acked, {n} sent",
                l.total.upstream_acked
            ));
        }
        if echoes_distinct != n {
            problems.push(format!(
                "{echoes_distinct} distinct echoes for {n} messages"
            ));
        }
        if echoes_acked != n {
            problems.push(format!("{echoes_acked} echoes acked of {n}"));
        }
        if l.total.receipts_acked < n as u64 {
            problems.push(format!(
                "{} receipts acked for {n} echoes",
                l.total.receipts_acked
            ));
        }
        if l.upstream_queued != 0 {
            problems.push(format!(
                "{} upstream messages or receipts still waiting at the server",
                l.upstream_queued
            ));
        }
        // Per message, from the server's records: each upstream message and each receipt
        // acked exactly once.
        let once = |receipt: bool| {
            l.upstream
                .iter()
                .filter(|r| r.receipt == receipt && r.acks != 1)
                .count()
        };
        let (messages_off, receipts_off) = (once(false), once(true));
        if messages_off != 0 {
            problems.push(format!(
                "{messages_off} upstream messages not acked exactly once"
            ));
        }
        if receipts_off != 0 {
            problems.push(format!("{receipts_off} receipts not acked exactly once"));
        }
        if l.total.bad_acks != 0 {
            problems.push(format!("{} acks the server refused", l.total.bad_acks));
        }
        if l.total.window_violations != 0 {
            problems.push(format!("{} window violations", l.total.window_violations));
        }
        if !report.unsent.is_empty() {
            problems.push(format!("{} messages never answered", report.unsent.len()));
        }
        if !report.unacked_upstream.is_empty() {
            problems.push(format!(
                "{} upstream messages left un-acked at close",
                report.unacked_upstream.len()
            ));
        }
        Self {
            problems,
            echoes_distinct,
            echoes_acked,
            echo_copies,
        }
    }

    fn held(&self) -> bool {
        self.problems.is_empty()
    }
}

fn print_summary(s: &serde_json::Value, check: &Check) {
    let line = |label: &str, key: &str| println!("{label:<32}{}", s[key]);
    line("devices", "devices");
    line("upstream messages sent", "upstream_sent");
    line("upstream messages acked", "upstream_acked");
    line("upstream redeliveries", "upstream_redelivered");
    line("distinct echoes", "echoes_distinct");
    line("echoes acked", "echoes_acked");
    line("echo copies on the wire", "echo_copies_on_the_wire");
    line("receipts sent / acked", "receipts_sent");
    line("", "receipts_acked");
    line("connections opened", "connections_opened");
    line("drains", "drains");
    line("round trips per second", "round_trips_per_s");
    line("seconds", "seconds");
    if check.held() {
        println!("the promise held: every message acked once and echoed, nothing lost");
    } else {
        println!("THE PROMISE DID NOT HOLD:");
        for p in &check.problems {
            println!("  - {p}");
        }
    }
}

/// What the client's events say about its connections, for the progress line.
#[derive(Debug, Default)]
struct Links {
    /// Sockets open (dialling, up or closing), from the client's counters.
    up: AtomicU64,
    /// Connections (and attempts) that ended.
    downs: AtomicU64,
    drains: AtomicU64,
}

/// Counts connections coming up and going down, and drains, until the client closes.
async fn watch(mut events: ccs_net::EventReceiver, links: Arc<Links>) {
    use ccs_net::Event;
    loop {
        match events.recv().await {
            Ok(Event::ConnectionDown { .. }) => {
                links.downs.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Event::Core(ev))
                if matches!(
                    *ev,
                    ccs_proto::client::ClientEvent::ConnectionDraining { .. }
                ) =>
            {
                links.drains.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) | Err(async_broadcast::RecvError::Overflowed(_)) => {}
            Err(async_broadcast::RecvError::Closed) => break,
        }
    }
}

/// Live progress: a bar on a terminal, a plain line a second otherwise, nothing with
/// `--json`.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    plain: bool,
    last: std::sync::Mutex<Instant>,
    start: Instant,
    links: Arc<Links>,
}

impl Progress {
    fn new(enabled: bool, total: u64, links: Arc<Links>) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let bar = (enabled && terminal).then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {pos}/{len} up  {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        Self {
            bar,
            plain: enabled && !terminal,
            last: std::sync::Mutex::new(Instant::now()),
            start: Instant::now(),
            links,
        }
    }

    fn show(&self, sent: u64, stats: &EchoStats) {
        let get = EchoStats::get;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let downs = load(&self.links.downs);
        let rate = get(&stats.echoed) as f64 / self.start.elapsed().as_secs_f64().max(1e-3);
        let msg = format!(
            "{} echoed down, {} receipts, {} acks, {} for redelivery, {rate:.0}/s, {} sockets open, {} drains, {} connections ended",
            get(&stats.echoed),
            get(&stats.receipts),
            get(&stats.acked),
            get(&stats.echo_deferred),
            load(&self.links.up),
            load(&self.links.drains),
            downs,
        );
        if let Some(bar) = &self.bar {
            bar.set_position(sent);
            bar.set_message(msg);
        } else if self.plain {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            if last.elapsed() >= Duration::from_secs(1) {
                *last = Instant::now();
                eprintln!("ccs demo: {sent} sent up, {msg}");
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}
