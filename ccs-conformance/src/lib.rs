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
}

/// Connects with `runtime`'s adapter and returns its handle.
pub async fn connect(runtime: Runtime, config: Config) -> Result<Client, ConnectError> {
    match runtime {
        Runtime::Tokio => ccs_tokio::Client::connect(config)
            .await
            .map(|c| c.handle().clone()),
    }
}

/// One `#[tokio::test]` per scenario and adapter: `tokio_adapter::NAME`, ... Each scenario is
/// an `async fn NAME(rt: Runtime)` in scope.
#[macro_export]
macro_rules! for_every_runtime {
    ($($name:ident),* $(,)?) => {
        mod tokio_adapter {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Runtime::Tokio).await
                }
            )*
        }
    };
}
