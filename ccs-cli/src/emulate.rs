//! `ccs emulate`: run the emulator until SIGTERM or Ctrl-C, then write its ledger.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use ccs_emulator::{Emulator, EmulatorConfig, UpstreamGenerator};
use clap::Args;

use crate::common::CredArgs;

/// Flags of `ccs emulate`.
#[derive(Debug, Args)]
pub(crate) struct EmulateArgs {
    /// Address to listen on (port 0: any free port, reported at start).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Write the generated certificate (PEM) here, for clients to trust. Default: a file in
    /// the temporary directory, named after the port.
    #[arg(long)]
    cert_out: Option<PathBuf>,
    #[command(flatten)]
    creds: CredArgs,
    /// Print where it listens as JSON on the first line of stdout:
    /// {"listening":"127.0.0.1:PORT","cert":"PATH"}.
    #[arg(long)]
    json: bool,
    /// Write the ledger (JSON) here on SIGTERM or Ctrl-C.
    #[arg(long)]
    ledger: Option<PathBuf>,
    /// Pending downstream messages allowed per connection before a violation is counted.
    #[arg(long, default_value_t = 100)]
    window: usize,
    /// Close a connection with a stream error on a window violation.
    #[arg(long)]
    strict_window: bool,
    /// Seed of every random choice (faults, stream ids).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Send CONNECTION_DRAINING on a connection after this many downstream messages.
    #[arg(long)]
    drain_after: Option<u64>,
    /// Generate upstream messages at this rate (per second), from device `emulated-device`.
    #[arg(long)]
    upstream_rate: Option<f64>,
    /// Answer messages to TOKEN with canonical id CANONICAL (TOKEN=CANONICAL). Repeatable.
    #[arg(long, value_parser = parse_pair)]
    canonical: Vec<(String, String)>,
    /// Nack messages to this token with DEVICE_UNREGISTERED. Repeatable.
    #[arg(long)]
    unregistered: Vec<String>,
    /// Nack messages to this token with BAD_REGISTRATION. Repeatable.
    #[arg(long)]
    bad_registration: Vec<String>,
    /// Send a whitespace keepalive every this many seconds.
    #[arg(long)]
    keepalive_secs: Option<u64>,
    /// Fault: cut each connection after the server wrote this many bytes.
    #[arg(long)]
    drop_after_bytes: Option<u64>,
    /// Fault: chance per written stanza of cutting the connection inside it.
    #[arg(long, default_value_t = 0.0)]
    drop_probability: f64,
    /// Fault: chance per downstream message of a stream error instead of an answer.
    #[arg(long, default_value_t = 0.0)]
    stream_error_probability: f64,
    /// Fault: answer each message after MIN..MAX milliseconds.
    #[arg(long, value_parser = parse_range_ms)]
    slow_ack_ms: Option<(Duration, Duration)>,
    /// Fault: chance per downstream message of never answering it.
    #[arg(long, default_value_t = 0.0)]
    missing_ack_probability: f64,
    /// Fault: write output in pieces of 1 to 16 bytes.
    #[arg(long)]
    tiny_writes: bool,
    /// Do not remember every message id (for long benchmarks; the ledger then has counts
    /// but no per-id answers).
    #[arg(long)]
    no_track_ids: bool,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .ok_or_else(|| format!("`{s}` is not TOKEN=CANONICAL"))
}

fn parse_range_ms(s: &str) -> Result<(Duration, Duration), String> {
    let (a, b) = s.split_once("..").unwrap_or((s, s));
    let ms = |x: &str| {
        x.trim()
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| format!("`{x}` is not a number of milliseconds"))
    };
    let (a, b) = (ms(a)?, ms(b)?);
    if a > b {
        return Err(format!("`{s}`: the minimum is above the maximum"));
    }
    Ok((a, b))
}

/// Runs the emulator until a signal, then writes the ledger.
pub(crate) async fn run(args: EmulateArgs) -> Result<ExitCode, String> {
    let (sender, key) = args.creds.load()?;
    let mut config = EmulatorConfig::new(sender, key);
    config.listen = args.listen;
    config.window = args.window;
    config.strict_window = args.strict_window;
    config.seed = args.seed;
    config.drain_after = args.drain_after;
    config.upstream_generator = args
        .upstream_rate
        .map(|r| UpstreamGenerator::new(r, "emulated-device"));
    config.canonical = args.canonical.into_iter().collect();
    config.unregistered = args.unregistered.into_iter().collect();
    config.bad_registrations = args.bad_registration.into_iter().collect();
    config.whitespace_keepalive = args.keepalive_secs.map(Duration::from_secs);
    config.track_ids = !args.no_track_ids;
    config.faults.drop_after_bytes = args.drop_after_bytes;
    config.faults.drop_probability = args.drop_probability;
    config.faults.stream_error_probability = args.stream_error_probability;
    config.faults.slow_ack = args.slow_ack_ms;
    config.faults.missing_ack_probability = args.missing_ack_probability;
    config.faults.tiny_writes = args.tiny_writes;

    let handle = Emulator::start(config)
        .await
        .map_err(|e| format!("cannot start the emulator: {e}"))?;
    let addr = handle.local_addr();
    let cert = args
        .cert_out
        .unwrap_or_else(|| std::env::temp_dir().join(format!("ccs-emulator-{}.pem", addr.port())));
    handle
        .write_cert_pem(&cert)
        .map_err(|e| format!("cannot write the certificate to {}: {e}", cert.display()))?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"listening": addr.to_string(), "cert": cert.display().to_string()})
        );
    } else {
        println!("listening on {addr}");
        println!("certificate: {}", cert.display());
    }
    wait_for_signal().await;
    let ledger = handle.shutdown().await;
    if let Some(path) = &args.ledger {
        ledger
            .write_json(path)
            .map_err(|e| format!("cannot write the ledger to {}: {e}", path.display()))?;
    }
    let t = &ledger.total;
    eprintln!(
        "ccs emulate: {} downstream received ({} unique), {} acked, {} nacked, {} never answered, {} window violations",
        t.downstream_received,
        t.unique_ids,
        t.acked,
        t.nacked_total(),
        t.never_answered,
        t.window_violations
    );
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
