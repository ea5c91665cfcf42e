//! One end-to-end suite that every adapter passes: `tests/suite.rs` holds the scenarios,
//! each an `async fn(Runtime)` against the emulator, and [`for_every_runtime!`] makes one
//! test of each scenario per adapter.
//!
//! The scenarios drive the client through [`ccs_net::Handle`], which every adapter's client
//! is built on (the application's calls are the same runtime-neutral futures everywhere);
//! what differs between adapters, and what the suite exercises, is everything under it:
//! dialling, TLS, moving bytes, timers, retiring sockets. The test harness itself runs on
//! tokio (the emulator is a tokio server).
#![forbid(unsafe_code)]

use ccs_net::{Config, ConnectError};

/// The client every scenario drives.
pub type Client = ccs_net::Handle;

/// An adapter under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// `ccs-tokio`.
    Tokio,
    /// `ccs-async-std` (futures-io: smol, async-std).
    AsyncStd,
    /// `ccs-blocking` (std::net and threads), connected from a blocking thread.
    Blocking,
}

/// Connects with `runtime`'s adapter and returns its handle.
pub async fn connect(runtime: Runtime, config: Config) -> Result<Client, ConnectError> {
    match runtime {
        Runtime::Tokio => ccs_tokio::Client::connect(config)
            .await
            .map(|c| c.handle().clone()),
        Runtime::AsyncStd => ccs_async_std::Client::connect(config)
            .await
            .map(|c| c.handle().clone()),
        Runtime::Blocking => {
            let (tx, rx) = futures_channel::oneshot::channel();
            std::thread::spawn(move || {
                let _ = tx.send(ccs_blocking::Client::connect(config).map(|c| c.handle().clone()));
            });
            rx.await
                .unwrap_or_else(|_| Err(ConnectError::Connect("the connecting thread died".into())))
        }
    }
}

/// One `#[tokio::test]` per scenario and adapter: `tokio_adapter::NAME`,
/// `async_std_adapter::NAME`, `blocking_adapter::NAME`. Each scenario is an
/// `async fn NAME(rt: Runtime)` in scope.
#[macro_export]
macro_rules! for_every_runtime {
    ($($name:ident),* $(,)?) => {
        $crate::for_every_runtime!(@one tokio_adapter, Tokio, $($name),*);
        $crate::for_every_runtime!(@one async_std_adapter, AsyncStd, $($name),*);
        $crate::for_every_runtime!(@one blocking_adapter, Blocking, $($name),*);
    };
    (@one $module:ident, $runtime:ident, $($name:ident),*) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Runtime::$runtime).await
                }
            )*
        }
    };
}

/// The README's Rust examples, compiled (and the runnable one run) as doctests.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
