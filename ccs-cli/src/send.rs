//! `ccs send`: downstream messages as JSON lines in, one outcome per input line out, as a
//! stream: lines are read as room in the client's queue allows, and each outcome is printed
//! as soon as it is known, so memory is bounded by the queue and the windows, not the input.

mod progress;

use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::runtime::Runtime;
use ccs_proto::client::{Outcome, SendErrorKind};
use ccs_proto::message::Downstream;
use clap::Args;
use serde_json::{Map, Value, json};
use tokio::task::JoinSet;

use self::progress::Progress;
use crate::common::{ConnArgs, Lines, queue_limit, spawn_line_reader};
use crate::signals::interrupt;

/// Flags of `ccs send`.
#[derive(Debug, Args)]
#[command(after_help = AFTER_HELP)]
pub(crate) struct SendArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// The file of JSON lines (one downstream message per line); standard input if absent.
    file: Option<PathBuf>,
    /// Print each outcome as a JSON object:
    /// {"line","id","result","code","canonical_id","error"}.
    #[arg(long)]
    json: bool,
    /// Seconds to wait, once the input has ended, for the answers still missing; the
    /// messages still unanswered then are reported as unsent.
    #[arg(long, default_value_t = 30)]
    close_timeout: u64,
    /// The adapter that carries the client's IO.
    #[arg(long, value_enum, default_value = "tokio")]
    runtime: Runtime,
}

const AFTER_HELP: &str = "\
Streaming: lines are read as room in the client's queue allows (a pipe that stays open, such \
as `tail -f queue.jsonl | ccs send`, works), and each outcome is printed as soon as it is \
known, in completion order, not input order: every outcome carries its input line number \
(`line N:`, or the \"line\" field with --json). Memory is bounded by the queue and the \
windows (at most max(1000, window x connections) messages are queued), not by the \
input's length; a line longer than 1 MiB ends the input with an error. Blank lines are \
skipped (their numbers are kept); a line \
that is not a downstream message is reported as invalid. At the end of the input (or at \
Ctrl-C) the answers still missing are awaited up to --close-timeout, the rest reported as \
unsent. On a terminal, a progress bar is drawn on standard error for runs longer than a \
second; nothing is drawn when standard error is not a terminal.

Results: acked, nacked, rejected, failed, expired, unsent, invalid. Exit status: 0 when every \
message was acked, 1 otherwise, 2 when the command could not run (or reading the input \
failed).";

/// One input line's fate.
#[derive(Debug)]
struct Line {
    number: usize,
    id: Option<String>,
    result: &'static str,
    code: Option<String>,
    canonical_id: Option<String>,
    error: Option<String>,
}

impl Line {
    fn invalid(number: usize, id: Option<String>, error: String) -> Self {
        Self {
            number,
            id,
            result: "invalid",
            code: None,
            canonical_id: None,
            error: Some(error),
        }
    }

    fn from_outcome(number: usize, id: String, outcome: Outcome) -> Self {
        let mut line = Self {
            number,
            id: Some(id),
            result: "",
            code: None,
            canonical_id: None,
            error: None,
        };
        match outcome {
            Outcome::Acked {
                canonical_registration_id,
            } => {
                line.result = "acked";
                line.canonical_id = canonical_registration_id;
            }
            Outcome::Nacked { nack } => {
                line.result = "nacked";
                line.code = Some(nack.error.as_str().to_owned());
                line.error = nack.error_description;
            }
            Outcome::Rejected { error } => {
                line.result = "rejected";
                line.code = Some(error.condition.clone());
                line.error = error.text.clone();
            }
            Outcome::Failed { reason, attempts } => {
                line.result = "failed";
                line.error = Some(format!("{reason:?} after {attempts} attempt(s)"));
                if let ccs_proto::client::FailReason::Nack(n) = reason {
                    line.code = Some(n.error.as_str().to_owned());
                }
            }
            Outcome::Expired { kind, .. } => {
                line.result = "expired";
                line.error = Some(format!("{kind:?}"));
            }
            Outcome::Unsent { maybe_delivered } => {
                line.result = "unsent";
                line.error = Some(format!("maybe_delivered: {maybe_delivered}"));
            }
            other => {
                line.result = "failed";
                line.error = Some(format!("{other:?}"));
            }
        }
        line
    }

    fn print(&self, json: bool, out: &mut impl Write) -> std::io::Result<()> {
        if json {
            let v = json!({
                "line": self.number,
                "id": self.id,
                "result": self.result,
                "code": self.code,
                "canonical_id": self.canonical_id,
                "error": self.error,
            });
            writeln!(out, "{v}")
        } else {
            write!(out, "line {}: ", self.number)?;
            if let Some(id) = &self.id {
                write!(out, "{id} ")?;
            }
            write!(out, "{}", self.result)?;
            if let Some(c) = &self.code {
                write!(out, " {c}")?;
            }
            if let Some(c) = &self.canonical_id {
                write!(out, " canonical_id={c}")?;
            }
            if let Some(e) = &self.error {
                write!(out, " ({e})")?;
            }
            writeln!(out)
        }
    }
}

/// Parses one input line into a message, filling in a missing `message_id`.
fn parse_line(
    text: &str,
    number: usize,
    prefix: &str,
) -> Result<Downstream, (Option<String>, String)> {
    let mut value: Value =
        serde_json::from_str(text).map_err(|e| (None, format!("not valid JSON: {e}")))?;
    let obj: &mut Map<String, Value> = value
        .as_object_mut()
        .ok_or_else(|| (None, "not a JSON object".to_owned()))?;
    if !obj.contains_key("message_id") {
        obj.insert(
            "message_id".into(),
            Value::String(format!("{prefix}-{number}")),
        );
    }
    let id = obj
        .get("message_id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    serde_json::from_value::<Downstream>(value)
        .map_err(|e| (id, format!("not a downstream message: {e}")))
}

/// Lines read ahead of the queue: the reader thread waits while this many are unread.
const READ_AHEAD: usize = 256;

/// Where the lines come from.
enum Source {
    Stdin,
    File(std::fs::File),
}

impl Source {
    /// The input's size in bytes when it is a regular file (for the progress bar).
    fn size(&self) -> Option<u64> {
        let meta = match self {
            Source::File(f) => f.metadata().ok()?,
            #[cfg(unix)]
            Source::Stdin => {
                use std::os::fd::AsFd;
                let fd = std::io::stdin().as_fd().try_clone_to_owned().ok()?;
                std::fs::File::from(fd).metadata().ok()?
            }
            #[cfg(not(unix))]
            Source::Stdin => return None,
        };
        meta.is_file().then_some(meta.len())
    }

    /// Whether the lines are typed on a terminal.
    fn is_terminal(&self) -> bool {
        matches!(self, Source::Stdin) && std::io::IsTerminal::is_terminal(&std::io::stdin())
    }

    /// What the input is called in an error message.
    fn name(&self) -> &'static str {
        match self {
            Source::Stdin => "standard input",
            Source::File(_) => "the input file",
        }
    }

    /// Reads lines on a thread of its own: it waits while [`READ_AHEAD`] lines are unread,
    /// so memory does not grow with the input.
    fn spawn_reader(self) -> Result<Lines, String> {
        let lines = match self {
            Source::Stdin => {
                spawn_line_reader("ccs-send-input", READ_AHEAD, || std::io::stdin().lock())
            }
            Source::File(f) => {
                spawn_line_reader("ccs-send-input", READ_AHEAD, move || BufReader::new(f))
            }
        };
        lines.map_err(|e| format!("cannot start the input thread: {e}"))
    }
}

/// Standard output (buffered, flushed whenever the loop is about to wait) and the progress.
struct Output {
    json: bool,
    out: BufWriter<std::io::Stdout>,
    dirty: bool,
    all_acked: bool,
    progress: Progress,
}

impl Output {
    /// Prints one outcome; `queued`: whether its message had gone into the queue.
    fn line(&mut self, line: Line, queued: bool) -> Result<(), String> {
        let acked = line.result == "acked";
        self.all_acked &= acked;
        self.progress.outcome(acked, queued);
        line.print(self.json, &mut self.out)
            .map_err(|e| format!("cannot write the outcomes: {e}"))?;
        self.dirty = true;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), String> {
        self.progress.update();
        if std::mem::take(&mut self.dirty) {
            let out = &mut self.out;
            self.progress
                .around(|| out.flush())
                .map_err(|e| format!("cannot write the outcomes: {e}"))?;
        }
        Ok(())
    }
}

/// The line for a message the client gave back instead of an outcome.
fn refused_line(number: usize, id: String, e: &ccs_net::SendError) -> Line {
    let mut line = Line::invalid(number, Some(id), e.to_string());
    line.result = match e.kind {
        SendErrorKind::DuplicateId => "invalid",
        _ => "unsent",
    };
    line
}

/// Sends the lines as they are read, as fast as the client's queue takes them, and prints
/// each outcome as soon as it is known (completion order, each with its line number).
pub(crate) async fn run(args: SendArgs) -> Result<ExitCode, String> {
    let source = match &args.file {
        Some(path) => Source::File(
            std::fs::File::open(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        ),
        None => Source::Stdin,
    };
    let mut config = args.conn.config()?;
    // The reader is always ready with the next line (see `queue_limit`); a deeper queue
    // would also leave more messages unsent when the input ends while the server is slow.
    config.client.max_queue = queue_limit(args.conn.window, args.conn.connections);
    let client = args.runtime.connect(config).await?;
    let prefix = format!("ccs-send-{}-{}", std::process::id(), unix_millis());
    let mut output = Output {
        json: args.json,
        out: BufWriter::with_capacity(64 * 1024, std::io::stdout()),
        dirty: false,
        all_acked: true,
        progress: Progress::new(source.size(), source.is_terminal()),
    };
    let input_name = source.name();
    let mut input = source.spawn_reader()?;
    // Lines read so far (blank ones included): the number of the last one.
    let mut number = 0;
    let mut interrupted =
        interrupt("ccs send: interrupted twice: quitting; outcomes not printed are lost");
    // Each queued message's outcome, awaited on a task of its own: at most the queue and
    // the windows of the connections are in flight, whatever the input's length.
    let mut in_flight: JoinSet<Line> = JoinSet::new();
    // A parsed message that waits for room in the queue (no line is read meanwhile).
    let mut waiting: Option<(usize, String, Downstream)> = None;
    let mut reading = true;
    let mut closing = None;
    let mut problem = None;
    loop {
        if !reading && waiting.is_none() && closing.is_none() {
            // The input ended: the client sends what it holds and waits for the answers
            // still missing until the deadline; what stays unanswered comes out as unsent.
            output.progress.closing();
            let client = client.clone();
            let deadline = Duration::from_secs(args.close_timeout);
            closing = Some(tokio::spawn(async move { client.close(deadline).await }));
        }
        output.flush()?;
        tokio::select! {
            biased;
            Some(done) = in_flight.join_next() => {
                let mut done = Some(done);
                while let Some(joined) = done {
                    let line = joined.map_err(|e| format!("internal error: {e}"))?;
                    output.line(line, true)?;
                    done = in_flight.try_join_next();
                }
            }
            place = client.reserve(), if waiting.is_some() => {
                let Some((number, id, message)) = waiting.take() else { continue };
                let Some(place) = place else {
                    let mut line = Line::invalid(number, Some(id), "the client stopped".into());
                    line.result = "unsent";
                    output.line(line, false)?;
                    problem = Some(format!("the client stopped before the input ended (at line {number})"));
                    reading = false;
                    continue;
                };
                match place.send(message, false) {
                    Ok(pending) => {
                        output.progress.queued();
                        in_flight.spawn(async move {
                            match pending.await {
                                Ok(outcome) => Line::from_outcome(number, id, outcome),
                                Err(e) => refused_line(number, id, &e),
                            }
                        });
                    }
                    Err(e) => output.line(refused_line(number, id, &e), false)?,
                }
            }
            item = input.recv(), if reading && waiting.is_none() => match item {
                None => reading = false,
                Some(Err(e)) => {
                    problem = Some(format!("cannot read {input_name} after line {number}: {e}"));
                    reading = false;
                }
                Some(Ok(text)) => {
                    number += 1;
                    output.progress.read(text.len());
                    let Ok(text) = std::str::from_utf8(&text) else {
                        output.line(Line::invalid(number, None, "not valid UTF-8".into()), false)?;
                        continue;
                    };
                    if text.trim().is_empty() {
                        continue;
                    }
                    match parse_line(text, number, &prefix) {
                        Err((id, error)) => output.line(Line::invalid(number, id, error), false)?,
                        Ok(message) => {
                            let id = message.message_id().as_str().to_owned();
                            waiting = Some((number, id, message));
                        }
                    }
                }
            },
            _ = &mut interrupted, if reading => {
                eprintln!(
                    "ccs send: interrupted: no more input is read; waiting up to {} s for the \
                     answers still missing (interrupt again to quit at once)",
                    args.close_timeout
                );
                reading = false;
            }
            else => break,
        }
    }
    if let Some(closing) = closing {
        let _report = closing.await;
    }
    output.flush()?;
    output.progress.finish();
    if let Some(problem) = problem {
        return Err(problem);
    }
    Ok(if output.all_acked {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn unix_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_in_a_missing_id_and_reports_bad_lines() {
        let m = parse_line(r#"{"to":"tok","data":{"a":"b"}}"#, 3, "p").unwrap();
        assert_eq!(m.message_id().as_str(), "p-3");
        let m = parse_line(r#"{"to":"tok","message_id":"mine"}"#, 3, "p").unwrap();
        assert_eq!(m.message_id().as_str(), "mine");
        assert!(
            parse_line("{not json", 1, "p")
                .unwrap_err()
                .1
                .contains("not valid JSON")
        );
        assert!(
            parse_line("[1]", 1, "p")
                .unwrap_err()
                .1
                .contains("not a JSON object")
        );
        let (id, e) = parse_line(r#"{"to":"tok","time_to_live":-1}"#, 7, "p").unwrap_err();
        assert_eq!(id.as_deref(), Some("p-7"));
        assert!(e.contains("downstream"), "{e}");
    }
}
