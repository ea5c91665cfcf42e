//! `--runtime`: which adapter carries the client's IO. Every adapter's client is built on the
//! same runtime-neutral [`ccs_net::Handle`], so the subcommands drive that handle and only
//! the connect differs: what changes with `--runtime` is everything under the handle
//! (dialling, TLS, moving bytes, timers, threads or tasks).

use ccs_net::{Config, Handle};
use clap::ValueEnum;

/// An adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Runtime {
    /// ccs-tokio.
    Tokio,
}

impl Runtime {
    /// Every adapter, in the order `--runtime all` runs them.
    pub(crate) const ALL: &'static [Runtime] = &[Runtime::Tokio];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Runtime::Tokio => "tokio",
        }
    }

    /// Connects with this adapter.
    pub(crate) async fn connect(self, config: Config) -> Result<Handle, String> {
        let connected = match self {
            Runtime::Tokio => ccs_tokio::Client::connect(config)
                .await
                .map(|c| c.handle().clone()),
        };
        connected.map_err(|e| e.to_string())
    }
}

/// `--runtime` of `ccs bench`: one adapter, or all of them side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum BenchRuntime {
    /// ccs-tokio.
    Tokio,
    /// Every adapter, one after the other, in one run.
    All,
}

impl BenchRuntime {
    pub(crate) fn runtimes(self) -> &'static [Runtime] {
        match self {
            BenchRuntime::Tokio => &[Runtime::Tokio],
            BenchRuntime::All => Runtime::ALL,
        }
    }
}
