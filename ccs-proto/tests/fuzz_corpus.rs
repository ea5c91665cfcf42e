//! Replays the fuzz corpora (`fuzz/corpus/<target>/`, and `fuzz/artifacts/<target>/` when
//! present) through the target bodies of `ccs_proto::fuzzing`, on stable: every input the
//! fuzzer kept, and every crash it found (copied into the corpus), stays a test.

use std::path::{Path, PathBuf};
use std::time::Instant;

use ccs_proto::fuzzing;

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "artifacts"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn replay(target: &str, body: impl Fn(&[u8])) {
    let files = inputs(target);
    assert!(!files.is_empty(), "no corpus for {target}");
    for path in files {
        let data = std::fs::read(&path).unwrap();
        eprintln!("{}", path.display());
        body(&data);
    }
}

/// The simulated clock's start (the only clock read here).
#[allow(clippy::disallowed_methods)]
fn epoch() -> Instant {
    Instant::now()
}

#[test]
fn framer_corpus() {
    replay("framer", fuzzing::framer);
}

#[test]
fn stanza_corpus() {
    replay("stanza", fuzzing::stanza);
}

#[test]
fn incoming_json_corpus() {
    replay("incoming_json", fuzzing::incoming_json);
}

#[test]
fn downstream_json_corpus() {
    replay("downstream_json", fuzzing::downstream_json);
}

#[test]
fn connection_input_corpus() {
    replay("connection_input", |d| {
        fuzzing::connection_input(d, epoch())
    });
}

#[test]
fn server_input_corpus() {
    replay("server_input", |d| fuzzing::server_input(d, epoch()));
}

#[test]
fn client_ops_corpus() {
    replay("client_ops", |d| fuzzing::client_ops(d, epoch()));
}
