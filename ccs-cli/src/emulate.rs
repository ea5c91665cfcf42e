//! `ccs emulate`: run the emulator until SIGTERM or Ctrl-C, then write its ledger.
//!
//! What it does while it runs (SIGUSR1, the upstream queue, the `--control stdin` protocol:
//! one JSON command per line, one JSON answer per command) is documented once, for users, in
//! [`RUNNING_HELP`], the end of `ccs emulate --help`; the code that carries it out is
//! [`ControlSession`]. Keep that text true when a command changes
//! (`tests/emulate_control.rs` checks that it names each one).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use ccs_emulator::{Emulator, EmulatorConfig, EmulatorHandle, Ledger, UpstreamGenerator};
use ccs_proto::message::{MessageId, Upstream};
use clap::Args;
use serde_json::{Map, Value, json};

use crate::common::{CredArgs, Lines, spawn_line_reader};
use crate::signals::{SignalEvent, Signals};

/// The end of `ccs emulate --help`: what it does while it runs, and the control protocol.
/// (Not `long_about`: the subcommand's doc comment in main.rs sets that, after these
/// attributes.)
const RUNNING_HELP: &str = r#"While it runs:

SIGUSR1 writes the ledger to --ledger PATH now (and says so on stderr).

Upstream messages, generated (--upstream-rate) or injected (--control), wait in a queue
while no client is connected, and go to the next client that binds; the emulator redelivers
each one until a client acks it. Generated ones stop being added at 100000 queued.

--control stdin: each line of stdin is one command, a JSON object with one key, answered by
exactly one JSON line on stdout (after the startup lines), in order. Each answer carries
"line", the input line's number (blank lines count and get no answer). A bad line gets
{"error": "...", "line": N} and the emulator keeps going. End of stdin ends the
control channel, not the emulator. Without --control, stdin is never read.

  {"upstream": {"from": "device-1", "data": {"k": "v"}}}
      Queue an upstream message from device token "device-1". Optional: "message_id"
      (default: a fresh ctl-up-N), "category" (default: com.example.app); "data"
      defaults to {}. Answer {"ok": "upstream", "message_id": ID, "line": N}.
  {"drain": true}
      Send CONNECTION_DRAINING on every open connection.
      Answer {"ok": "drain", "connections": LIVE, "line": N}.
  {"ledger": "/path.json"}
      Write the ledger there now. Answer {"ok": "ledger", "path": PATH, "line": N}.
  {"ledger": null}
      Answer {"ok": "ledger", "ledger": {...}, "line": N}: the ledger on that line.
  {"pause_reading": true}   {"resume_reading": true}
      Stop / resume reading from every connection (a server that stalls).
      Answer {"ok": "pause_reading", ...} / {"ok": "resume_reading", ...}."#;

/// Where `ccs emulate` takes control commands from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ControlSource {
    /// JSON lines on stdin, answers as JSON lines on stdout.
    Stdin,
}

/// Flags of `ccs emulate`.
#[derive(Debug, Args)]
#[command(after_long_help = RUNNING_HELP)]
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
    /// Write the ledger (JSON) here on SIGTERM or Ctrl-C, and on SIGUSR1 while running.
    #[arg(long)]
    ledger: Option<PathBuf>,
    /// Take commands (inject upstream, drain, ledger, pause/resume reading) as JSON lines
    /// from here, answering each with a JSON line on stdout (protocol: see --help).
    #[arg(long, value_enum)]
    control: Option<ControlSource>,
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
    /// Generate upstream messages at this rate (per second), from device `emulated-device`,
    /// ids `gen-N`. While no client is connected they queue (up to 100000) and go to the next
    /// client that connects.
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

/// Runs the emulator until a signal, then writes the ledger. SIGUSR1 and control commands
/// are handled meanwhile.
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

    // Before the startup line: a signal sent as soon as it is printed must not be lost.
    let mut signals = Signals::listen()?;
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
    let mut control = match args.control {
        Some(ControlSource::Stdin) => Some(read_stdin_lines()?),
        None => None,
    };
    let mut session = ControlSession::default();
    loop {
        tokio::select! {
            signal = signals.next() => match signal {
                SignalEvent::Stop => break,
                SignalEvent::WriteLedger => write_ledger_on_signal(&handle, args.ledger.as_deref()),
            },
            line = next_line(&mut control) => match line {
                Some(line) => {
                    if let Some(answer) = session.answer(&handle, line) {
                        print_line(&answer);
                    }
                }
                None => {
                    tracing::info!("end of stdin: no more control commands");
                    control = None;
                }
            },
        }
    }
    let ledger = handle.shutdown().await;
    if let Some(path) = &args.ledger {
        write_ledger(&ledger, path)?;
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

/// Writes the ledger to a temporary file next to `path`, then renames it into place, so that
/// a reader (of a ledger written on SIGUSR1, say) never sees half of one.
fn write_ledger(ledger: &Ledger, path: &Path) -> Result<(), String> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    ledger
        .write_json(&tmp)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("cannot write the ledger to {}: {e}", path.display())
        })
}

fn write_ledger_on_signal(handle: &EmulatorHandle, path: Option<&Path>) {
    match path {
        Some(path) => match write_ledger(&handle.ledger(), path) {
            Ok(()) => eprintln!(
                "ccs emulate: ledger written to {} (SIGUSR1)",
                path.display()
            ),
            Err(e) => eprintln!("ccs emulate: {e} (SIGUSR1)"),
        },
        None => eprintln!("ccs emulate: SIGUSR1 ignored: no --ledger PATH to write to"),
    }
}

/// One JSON line on stdout. A closed stdout (the controller went away) is not an error of
/// the emulator's: the answer is dropped.
fn print_line(value: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}").and_then(|()| out.flush());
}

/// A line of stdin: its text, or why it has none (not UTF-8, a read error).
type InputLine = Result<String, String>;

/// Commands waiting to be handled: a controller that writes faster blocks.
const CONTROL_LINES_AHEAD: usize = 16;

/// Reads stdin on a thread of its own (the runtime has no async stdin here), line by line.
fn read_stdin_lines() -> Result<Lines, String> {
    spawn_line_reader("ccs-emulate-stdin", CONTROL_LINES_AHEAD, || {
        std::io::stdin().lock()
    })
    .map_err(|e| format!("cannot start the thread that reads stdin: {e}"))
}

/// A line as read (with its line end) as a command's text, without the line end.
fn input_line(read: std::io::Result<Vec<u8>>) -> InputLine {
    let mut line = read.map_err(|e| format!("cannot read stdin: {e}"))?;
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| "the line is not UTF-8".to_owned())
}

/// The next control line; `None` at the end of stdin; never, without a control channel.
async fn next_line(control: &mut Option<Lines>) -> Option<InputLine> {
    match control {
        Some(rx) => rx.recv().await.map(input_line),
        None => std::future::pending().await,
    }
}

/// The state of the control channel: line numbers and generated message ids.
#[derive(Debug, Default)]
struct ControlSession {
    /// Lines read so far.
    lines: u64,
    /// `ctl-up-N` ids handed out so far.
    upstream_ids: u64,
}

impl ControlSession {
    /// Runs one input line and returns its answer, tagged with the line number; `None` for a
    /// blank line.
    fn answer(&mut self, handle: &EmulatorHandle, line: InputLine) -> Option<Value> {
        self.lines += 1;
        let result = match line {
            Ok(text) if text.trim().is_empty() => return None,
            Ok(text) => self.run(handle, &text),
            Err(e) => Err(e),
        };
        let mut answer = match result {
            Ok(Value::Object(ok)) => ok,
            Ok(other) => Map::from_iter([("ok".to_owned(), other)]),
            Err(e) => Map::from_iter([("error".to_owned(), Value::String(e))]),
        };
        answer.insert("line".to_owned(), self.lines.into());
        Some(Value::Object(answer))
    }

    /// Parses and runs one command; `Ok` holds the answer object (without `line`).
    fn run(&mut self, handle: &EmulatorHandle, text: &str) -> Result<Value, String> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("the line is not JSON: {e}"))?;
        let Value::Object(command) = value else {
            return Err(format!("a command is a JSON object; {COMMANDS}"));
        };
        if command.len() != 1 {
            return Err(format!(
                "a command is an object with exactly one key; {COMMANDS}"
            ));
        }
        let Some((name, arg)) = command.into_iter().next() else {
            return Err(format!("a command is an object with one key; {COMMANDS}"));
        };
        match name.as_str() {
            "upstream" => {
                let id = self.inject(handle, arg)?;
                Ok(json!({"ok": "upstream", "message_id": id}))
            }
            "drain" => {
                expect_true(&name, &arg)?;
                handle.drain_all();
                Ok(json!({"ok": "drain", "connections": handle.live_connections()}))
            }
            "ledger" => match arg {
                Value::Null => Ok(json!({"ok": "ledger", "ledger": handle.ledger()})),
                Value::String(path) if !path.is_empty() => {
                    write_ledger(&handle.ledger(), Path::new(&path))?;
                    Ok(json!({"ok": "ledger", "path": path}))
                }
                _ => Err("\"ledger\" takes a file path, or null for the ledger on stdout".into()),
            },
            "pause_reading" => {
                expect_true(&name, &arg)?;
                handle.pause_reading();
                Ok(json!({"ok": "pause_reading"}))
            }
            "resume_reading" => {
                expect_true(&name, &arg)?;
                handle.resume_reading();
                Ok(json!({"ok": "resume_reading"}))
            }
            other => Err(format!("unknown command `{other}`; {COMMANDS}")),
        }
    }

    /// Queues the upstream message `arg` describes and returns its `message_id`.
    fn inject(&mut self, handle: &EmulatorHandle, arg: Value) -> Result<String, String> {
        const USAGE: &str = "\"upstream\" takes {\"from\": TOKEN, \"data\": {...}, \"message_id\": ID, \"category\": CATEGORY} (only \"from\" is required)";
        let Value::Object(fields) = arg else {
            return Err(USAGE.into());
        };
        let mut from = None;
        let mut data = Map::new();
        let mut message_id = None;
        let mut category = None;
        for (key, value) in fields {
            match (key.as_str(), value) {
                ("from", Value::String(s)) if !s.is_empty() => from = Some(s),
                ("data", Value::Object(m)) => data = m,
                ("message_id", Value::String(s)) => message_id = Some(s),
                ("category", Value::String(s)) if !s.is_empty() => category = Some(s),
                ("from" | "data" | "message_id" | "category", _) => {
                    return Err(format!("bad \"{key}\": {USAGE}"));
                }
                _ => return Err(format!("unknown field \"{key}\": {USAGE}")),
            }
        }
        let from = from.ok_or_else(|| format!("missing \"from\": {USAGE}"))?;
        let message_id = match message_id {
            Some(id) => MessageId::new(id).map_err(|e| format!("bad \"message_id\": {e}"))?,
            None => {
                self.upstream_ids += 1;
                MessageId::new(format!("ctl-up-{}", self.upstream_ids))
                    .expect("a short ASCII id is a valid message id")
            }
        };
        let id = message_id.to_string();
        handle.inject_upstream(Upstream {
            from,
            category: Some(category.unwrap_or_else(|| handle.config().category.clone())),
            message_id,
            data,
            time_to_live: None,
            extra: Map::new(),
        });
        Ok(id)
    }
}

/// The commands, for error messages.
const COMMANDS: &str = "one of {\"upstream\": {...}}, {\"drain\": true}, {\"ledger\": PATH or null}, {\"pause_reading\": true}, {\"resume_reading\": true}";

fn expect_true(name: &str, arg: &Value) -> Result<(), String> {
    if *arg == Value::Bool(true) {
        Ok(())
    } else {
        Err(format!("\"{name}\" takes true: {{\"{name}\": true}}"))
    }
}
