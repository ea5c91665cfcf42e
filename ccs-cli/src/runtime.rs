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
    /// ccs-async-std, its IO under smol (the application's futures here run on tokio; the
    /// adapter's IO thread is the same under either runtime).
    Smol,
    /// ccs-async-std, connected from an async-std task.
    AsyncStd,
    /// ccs-blocking: std::net and threads.
    Blocking,
}

impl Runtime {
    /// Every adapter, in the order `--runtime all` runs them.
    pub(crate) const ALL: &'static [Runtime] = &[
        Runtime::Tokio,
        Runtime::Smol,
        Runtime::AsyncStd,
        Runtime::Blocking,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Runtime::Tokio => "tokio",
            Runtime::Smol => "smol",
            Runtime::AsyncStd => "async-std",
            Runtime::Blocking => "blocking",
        }
    }

    /// Connects with this adapter.
    pub(crate) async fn connect(self, config: Config) -> Result<Handle, String> {
        let connected = match self {
            Runtime::Tokio => ccs_tokio::Client::connect(config)
                .await
                .map(|c| c.handle().clone()),
            // The connect runs on a thread of that runtime's own executor; the handle's
            // futures are runtime-neutral and are awaited here.
            Runtime::Smol => {
                on_thread(move || {
                    smol::block_on(ccs_async_std::Client::connect(config))
                        .map(|c| c.handle().clone())
                })
                .await?
            }
            Runtime::AsyncStd => {
                on_thread(move || {
                    async_std::task::block_on(ccs_async_std::Client::connect(config))
                        .map(|c| c.handle().clone())
                })
                .await?
            }
            Runtime::Blocking => {
                on_thread(move || ccs_blocking::Client::connect(config).map(|c| c.handle().clone()))
                    .await?
            }
        };
        connected.map_err(|e| e.to_string())
    }
}

/// Runs `f` on a thread of its own and waits for it without blocking tokio.
async fn on_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("the connecting thread failed: {e}"))
}

/// `--runtime` of `ccs bench`: one adapter, or all of them side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum BenchRuntime {
    /// ccs-tokio.
    Tokio,
    /// ccs-async-std under smol.
    Smol,
    /// ccs-async-std under async-std.
    AsyncStd,
    /// ccs-blocking.
    Blocking,
    /// Every adapter, one after the other, in one run.
    All,
}

impl BenchRuntime {
    pub(crate) fn runtimes(self) -> &'static [Runtime] {
        match self {
            BenchRuntime::Tokio => &[Runtime::Tokio],
            BenchRuntime::Smol => &[Runtime::Smol],
            BenchRuntime::AsyncStd => &[Runtime::AsyncStd],
            BenchRuntime::Blocking => &[Runtime::Blocking],
            BenchRuntime::All => Runtime::ALL,
        }
    }
}
