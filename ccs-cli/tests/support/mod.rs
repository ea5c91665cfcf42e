//! What the process tests share: the binary, reading a child's output on a thread, and
//! `ccs emulate --json --control stdin` as a child process.
#![allow(dead_code)] // each test binary uses part of it

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use ccs_tokio::prelude::*;
use serde_json::Value;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_ccs");
pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// Lines of one of the child's output streams, read on a thread.
pub(crate) fn lines_of(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// A `ccs emulate --json --control stdin` process. Killed when dropped (a failed test).
pub(crate) struct Emu {
    pub(crate) child: Child,
    pub(crate) stdin: Option<ChildStdin>,
    pub(crate) stdout: mpsc::Receiver<String>,
    pub(crate) stderr: mpsc::Receiver<String>,
    pub(crate) addr: String,
    pub(crate) cert: String,
}

impl Emu {
    pub(crate) fn start(extra: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args([
                "emulate",
                "--json",
                "--sender-id",
                "42",
                "--control",
                "stdin",
            ])
            .args(extra)
            .env("CCS_API_KEY", "test-key")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = lines_of(child.stdout.take().unwrap());
        let stderr = lines_of(child.stderr.take().unwrap());
        let first = stdout.recv_timeout(WAIT).expect("the startup line");
        let v: Value = serde_json::from_str(&first).unwrap();
        Self {
            addr: v["listening"].as_str().unwrap().to_owned(),
            cert: v["cert"].as_str().unwrap().to_owned(),
            child,
            stdin,
            stdout,
            stderr,
        }
    }

    /// Writes one line to its stdin and returns the answer line, parsed.
    pub(crate) fn command(&mut self, line: &str) -> Value {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
        let answer = self
            .stdout
            .recv_timeout(WAIT)
            .unwrap_or_else(|e| panic!("no answer to {line}: {e}"));
        serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("the answer to {line} is not JSON ({e}): {answer}"))
    }

    /// The first stderr line containing `needle`.
    pub(crate) fn stderr_line(&self, needle: &str) -> String {
        loop {
            let line = self
                .stderr
                .recv_timeout(WAIT)
                .unwrap_or_else(|e| panic!("no stderr line with {needle:?}: {e}"));
            if line.contains(needle) {
                return line;
            }
        }
    }

    pub(crate) fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM, then wait for it to write its ledger and exit successfully.
    pub(crate) fn stop(mut self) {
        self.signal("TERM");
        assert!(self.child.wait().unwrap().success());
    }

    /// A client configuration trusting the certificate it wrote.
    pub(crate) fn client_config(&self) -> Config {
        let (host, port) = self.addr.rsplit_once(':').unwrap();
        let pem = std::fs::read_to_string(&self.cert).unwrap();
        let mut config = Config::new(
            Endpoint::new(host.to_owned(), port.parse().unwrap()),
            SenderId::new("42").unwrap(),
            ServerKey::new("test-key").unwrap(),
        )
        .trust_only_pem(pem);
        config.tls.server_name = Some("localhost".into());
        config
    }
}

impl Drop for Emu {
    fn drop(&mut self) {
        // Already reaped after `stop`; otherwise a test failed and it must not outlive it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
