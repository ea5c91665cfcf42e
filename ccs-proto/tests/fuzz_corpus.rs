//! Replays the fuzz corpora (`fuzz/corpus/<target>/`, and `fuzz/artifacts/<target>/` when
//! present) through the target bodies of `ccs_proto::fuzzing`, on stable: every input the
//! fuzzer kept, and every crash it found (copied into the corpus), stays a test.
//!
//! `CCS_FUZZ_CORPUS=/some/dir` also replays `/some/dir/<target>/`: a corpus grown by a local
//! fuzzing run, checked against the bodies as they are now.

use std::path::{Path, PathBuf};
use std::time::Instant;

use ccs_proto::fuzzing;

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut dirs = vec![root.join("corpus"), root.join("artifacts")];
    dirs.extend(std::env::var_os("CCS_FUZZ_CORPUS").map(PathBuf::from));
    let mut files = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir.join(target)) else {
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

// ---- regressions: crashes the fuzzer found, each with its minimized input ----

fn regression(target: &str, name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
        .join(name);
    std::fs::read(path).unwrap()
}

/// The framer found by fuzzing: a stream header under `max_header_bytes` after a long XML
/// declaration was accepted, though the limit covers the declaration and whitespace before
/// the header too (FramerConfig docs): the prolog was limited on its own, item by item.
#[test]
fn regression_prolog_counts_toward_the_header_limit() {
    fuzzing::framer(&regression(
        "framer",
        "regression-prolog-counts-toward-header-limit",
    ));
    use ccs_proto::error::XmlErrorKind;
    use ccs_proto::xml::{Framer, FramerConfig};
    let config = FramerConfig {
        max_header_bytes: 256,
        ..FramerConfig::default()
    };
    let header = b"<stream:stream from='gcm.googleapis.com' id='A1' version='1.0' \
        xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client'>";
    let decl = format!("<?xml version='1.0' {}?>", " ".repeat(100));
    let mut f = Framer::new(config.clone());
    f.push(decl.as_bytes());
    f.push(b"  ");
    f.push(header);
    let e = f.next_frame().unwrap_err();
    assert!(
        matches!(e.kind, XmlErrorKind::HeaderTooLarge { limit: 256 }),
        "{e:?}"
    );
    // Whitespace alone before the header counts too, in pieces.
    let mut f = Framer::new(config);
    for _ in 0..300 {
        f.push(b" ");
        if f.next_frame().is_err() {
            return;
        }
    }
    panic!("300 bytes of whitespace before the header were accepted");
}

/// Found by fuzzing `downstream_json`: a number such as `5e90` was read as the nearest double
/// but one (serde_json's default float parsing is fast, not exact), so a message decoded,
/// encoded and decoded again changed its numbers: what the emulator or a client read was not
/// what the peer wrote. Numbers are now read exactly (serde_json's `float_roundtrip`).
#[test]
fn regression_numbers_are_read_exactly() {
    fuzzing::downstream_json(&regression(
        "downstream_json",
        "regression-float-round-trip",
    ));
    use ccs_proto::message::{ClientMessage, Incoming};
    for text in [
        "5e90",
        "4.9999999999999995e+90",
        "0.1",
        "1.7976931348623157e308",
        "2.5e-308",
    ] {
        let want: f64 = text.parse().unwrap();
        let json = format!(r#"{{"to":"t","message_id":"m","n":{text}}}"#);
        let Ok(ClientMessage::Downstream(d)) = ClientMessage::from_json(&json) else {
            panic!("{json}");
        };
        assert_eq!(d.extra()["n"].as_f64(), Some(want), "{json}");
        let json = format!(r#"{{"from":"t","message_id":"m","message_type":"ack","n":{text}}}"#);
        let Ok(Incoming::Ack(a)) = Incoming::from_json(&json) else {
            panic!("{json}");
        };
        assert_eq!(a.extra["n"].as_f64(), Some(want), "{json}");
    }
}
