//! Flags and helpers shared by the subcommands: endpoint, TLS trust, credentials, reading
//! input lines.

use std::io::BufRead;
use std::path::PathBuf;

use ccs_proto::credentials::{SenderId, ServerKey};
use ccs_tokio::{Config, Endpoint, TlsOptions};
use clap::Args;

/// The environment variable that holds the server key (never taken from argv).
pub(crate) const KEY_ENV: &str = "CCS_API_KEY";

/// Where to connect and as whom.
#[derive(Debug, Clone, Args)]
pub(crate) struct ConnArgs {
    /// HOST:PORT, or a preset: fcm (fcm-xmpp.googleapis.com:5235), fcm-test (:5236), gcm
    /// (gcm.googleapis.com:5235).
    #[arg(long, default_value = "fcm")]
    pub(crate) endpoint: String,
    /// Extra CA certificate (PEM) to trust, e.g. the emulator's `--cert-out`. Repeatable.
    #[arg(long = "ca-file")]
    pub(crate) ca_files: Vec<PathBuf>,
    /// A server certificate (PEM) to trust exactly: accepted when the server presents this
    /// very certificate, whoever issued it and whatever names it carries; e.g. a self-signed
    /// one from `openssl req -x509`, which --ca-file refuses as a CA certificate. The server
    /// must still prove it holds the certificate's key, and the certificate must be within
    /// its validity dates. Every other certificate is checked as usual. Repeatable.
    #[arg(long = "pin-cert", value_name = "FILE")]
    pub(crate) pin_certs: Vec<PathBuf>,
    /// The name the server's certificate must carry (default: the endpoint's host).
    #[arg(long)]
    pub(crate) server_name: Option<String>,
    #[command(flatten)]
    pub(crate) creds: CredArgs,
    /// Downstream messages in flight per connection (1..=1000).
    #[arg(long, default_value_t = 100)]
    pub(crate) window: usize,
    /// Connections to keep open (1..=1000).
    #[arg(long, default_value_t = 1)]
    pub(crate) connections: usize,
    /// Authenticate as the bare sender id instead of SENDER_ID@gcm.googleapis.com (for
    /// general-purpose XMPP servers).
    #[arg(long)]
    pub(crate) bare_authcid: bool,
    /// Seconds to keep retrying until the first connection is up (transient failures are
    /// retried with backoff; refused credentials or an untrusted certificate end at once).
    #[arg(long, value_name = "SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=315_360_000))]
    pub(crate) connect_timeout: u64,
}

/// The sender id, and where the key comes from.
#[derive(Debug, Clone, Args)]
pub(crate) struct CredArgs {
    /// The sender id (project number). Also read from CCS_SENDER_ID.
    #[arg(long, env = "CCS_SENDER_ID")]
    pub(crate) sender_id: String,
    /// A file holding the server key (surrounding whitespace is ignored). Without it the key
    /// comes from the CCS_API_KEY environment variable. Never pass the key itself as an
    /// argument: argv is visible to every user of the machine.
    #[arg(long)]
    pub(crate) api_key_file: Option<PathBuf>,
}

impl CredArgs {
    /// The sender id and key, or an error a person can act on.
    pub(crate) fn load(&self) -> Result<(SenderId, ServerKey), String> {
        let sender = SenderId::new(self.sender_id.trim()).map_err(|e| e.to_string())?;
        let key = match &self.api_key_file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the key file {}: {e}", path.display()))?,
            None => std::env::var(KEY_ENV)
                .map_err(|_| format!("no server key: set {KEY_ENV} or pass --api-key-file PATH"))?,
        };
        let key = ServerKey::new(key.trim()).map_err(|e| e.to_string())?;
        Ok((sender, key))
    }
}

impl ConnArgs {
    /// The adapter configuration these flags describe.
    pub(crate) fn config(&self) -> Result<Config, String> {
        let endpoint = Endpoint::parse(&self.endpoint)?;
        let (sender, key) = self.creds.load()?;
        let mut config = Config::new(endpoint, sender, key);
        let mut tls = TlsOptions::default();
        tls.server_name = self.server_name.clone();
        tls.ca_files = self.ca_files.clone();
        tls.pinned_certs = self.pin_certs.clone();
        config.tls = tls;
        config.client.connection.window = self.window;
        config.client.connections = self.connections;
        if self.bare_authcid {
            config.client.connection.authcid = ccs_proto::AuthcidForm::Bare;
        }
        config.client.reconnect.first_connect_timeout =
            std::time::Duration::from_secs(self.connect_timeout);
        config.client.max_queue = config
            .client
            .max_queue
            .max(self.window * self.connections * 2);
        Ok(config)
    }
}

/// The queue limit of `ccs send` and `ccs bench`: one window of every connection, at least
/// 1000 messages. A sender that is always ready with the next message (a file, a pipe, the
/// benchmark's loop) needs the queue only to refill the windows as answers free them; a
/// deeper queue moved no more messages per second in `ccs bench` and only held more memory
/// (4 windows at window 1000: a peak 4 MB higher, reached whenever the queue first filled;
/// BENCHMARKS.md).
pub(crate) fn queue_limit(window: usize, connections: usize) -> usize {
    window.saturating_mul(connections).max(1000)
}

/// Sets up logging to stderr: `-v` info, `-vv` debug, `-vvv` trace; warnings otherwise.
pub(crate) fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => tracing::Level::WARN,
        1 => tracing::Level::INFO,
        2 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The longest line [`spawn_line_reader`] takes, in bytes (1 MiB: a downstream message, or a
/// control command, is a few kilobytes).
pub(crate) const MAX_LINE: usize = 1 << 20;

/// The lines [`spawn_line_reader`] reads: each one's bytes, or the error that ended them.
pub(crate) type Lines = tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>;

/// Reads lines on a thread of its own (blocking reads: a terminal, a pipe that stays open)
/// into a channel of `capacity` lines, so a writer that runs ahead of the consumer waits,
/// and memory does not grow with the input. Each item is a line's bytes with its newline
/// (the last line may have none), or the read error that ends the input; the channel closes
/// at the end of the input. A plain thread, not `spawn_blocking`: such a read cannot be
/// cancelled, and the runtime's shutdown would wait for it; the process exit ends it.
///
/// A line longer than [`MAX_LINE`] bytes (its newline not counted) ends the input with an
/// `InvalidData` error instead of growing without bound.
///
/// `open` runs on that thread (a locked stdin cannot move between threads).
pub(crate) fn spawn_line_reader<R: BufRead>(
    thread_name: &str,
    capacity: usize,
    open: impl FnOnce() -> R + Send + 'static,
) -> std::io::Result<Lines> {
    let (tx, rx) = tokio::sync::mpsc::channel(capacity);
    std::thread::Builder::new()
        .name(thread_name.into())
        .spawn(move || {
            let mut input = open();
            loop {
                let mut line = Vec::new();
                let limit = MAX_LINE as u64 + 1;
                let item = match std::io::Read::take(&mut input, limit).read_until(b'\n', &mut line)
                {
                    Ok(0) => return,
                    Ok(n) if n > MAX_LINE && line.last() != Some(&b'\n') => {
                        Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("a line longer than {MAX_LINE} bytes"),
                        ))
                    }
                    Ok(_) => Ok(line),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => Err(e),
                };
                let failed = item.is_err();
                if tx.blocking_send(item).is_err() || failed {
                    return;
                }
            }
        })?;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::{MAX_LINE, queue_limit, spawn_line_reader};

    #[test]
    fn a_line_over_the_limit_ends_the_input_with_an_error_and_memory_stays_bounded() {
        let mut input = b"short\n".to_vec();
        input.extend(std::iter::repeat_n(b'a', MAX_LINE));
        input.extend(b"\n"); // exactly the limit: taken
        input.extend(std::iter::repeat_n(b'b', MAX_LINE + 1));
        input.extend(b"\nnever read\n");
        let mut lines =
            spawn_line_reader("test-lines", 4, move || std::io::Cursor::new(input)).unwrap();
        assert_eq!(lines.blocking_recv().unwrap().unwrap(), b"short\n");
        assert_eq!(lines.blocking_recv().unwrap().unwrap().len(), MAX_LINE + 1);
        let e = lines.blocking_recv().unwrap().unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("longer than"), "{e}");
        assert!(lines.blocking_recv().is_none(), "the input ends there");
        // The last line may have no newline.
        let mut lines =
            spawn_line_reader("test-lines", 4, || std::io::Cursor::new(b"a\nb".to_vec())).unwrap();
        assert_eq!(lines.blocking_recv().unwrap().unwrap(), b"a\n");
        assert_eq!(lines.blocking_recv().unwrap().unwrap(), b"b");
        assert!(lines.blocking_recv().is_none());
    }

    #[test]
    fn the_queue_holds_one_window_per_connection_and_at_least_1000() {
        assert_eq!(queue_limit(100, 1), 1000);
        assert_eq!(queue_limit(1000, 1), 1000);
        assert_eq!(queue_limit(1000, 4), 4000);
        assert_eq!(queue_limit(usize::MAX, 2), usize::MAX, "saturates");
    }
}
