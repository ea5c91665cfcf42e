//! `ccs send`: downstream messages as JSON lines in, one outcome per input line out.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::runtime::Runtime;
use ccs_proto::client::{Outcome, SendErrorKind};
use ccs_proto::message::Downstream;
use clap::Args;
use serde_json::{Map, Value, json};

use crate::common::ConnArgs;

/// Flags of `ccs send`.
#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// The file of JSON lines (one downstream message per line); standard input if absent.
    file: Option<PathBuf>,
    /// Print each outcome as a JSON object: {"line","id","result","code","canonical_id",...}.
    #[arg(long)]
    json: bool,
    /// Seconds to wait for the answers still missing at the end.
    #[arg(long, default_value_t = 30)]
    close_timeout: u64,
    /// The adapter that carries the client's IO.
    #[arg(long, value_enum, default_value = "tokio")]
    runtime: Runtime,
}

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

/// Sends every line and prints the outcomes in input order.
pub(crate) async fn run(args: SendArgs) -> Result<ExitCode, String> {
    let lines: Vec<String> = match &args.file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .lines()
            .map(str::to_owned)
            .collect(),
        None => std::io::stdin()
            .lock()
            .lines()
            .collect::<Result<_, _>>()
            .map_err(|e| format!("cannot read standard input: {e}"))?,
    };
    let config = args.conn.config()?;
    let client = args.runtime.connect(config).await?;
    let prefix = format!("ccs-send-{}-{}", std::process::id(), unix_millis());
    let mut tasks = Vec::new();
    for (i, text) in lines.iter().enumerate() {
        let number = i + 1;
        if text.trim().is_empty() {
            continue;
        }
        match parse_line(text, number, &prefix) {
            Err((id, error)) => tasks.push(Task::Done(Line::invalid(number, id, error))),
            Ok(message) => {
                let id = message.message_id().as_str().to_owned();
                let client = client.clone();
                tasks.push(Task::Sending(
                    number,
                    id,
                    tokio::spawn(async move { client.send(message).await }),
                ));
            }
        }
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut all_acked = true;
    for task in tasks {
        let line = match task {
            Task::Done(line) => line,
            Task::Sending(number, id, handle) => match handle.await {
                Ok(Ok(outcome)) => Line::from_outcome(number, id, outcome),
                Ok(Err(e)) => {
                    let mut l = Line::invalid(number, Some(id), e.to_string());
                    l.result = match e.kind {
                        SendErrorKind::DuplicateId => "invalid",
                        _ => "unsent",
                    };
                    l
                }
                Err(e) => Line::invalid(number, Some(id), format!("internal error: {e}")),
            },
        };
        all_acked &= line.result == "acked";
        line.print(args.json, &mut out).map_err(|e| e.to_string())?;
    }
    drop(out);
    client.close(Duration::from_secs(args.close_timeout)).await;
    Ok(if all_acked {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

enum Task {
    Done(Line),
    Sending(
        usize,
        String,
        tokio::task::JoinHandle<Result<Outcome, ccs_net::SendError>>,
    ),
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
