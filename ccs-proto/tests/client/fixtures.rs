//! The shared setup of the client tests: the credentials, configs, a [`Net`] with its epoch,
//! and shorthands for messages and durations; re-exports the harness from
//! `ccs_proto::testing`.

use std::time::{Duration, Instant};

use ccs_proto::ConnectionConfig;
use ccs_proto::client::ClientConfig;
use ccs_proto::credentials::{SenderId, ServerKey};
use ccs_proto::message::{Downstream, MessageId};
use ccs_proto::server::ServerConfig;

pub use ccs_proto::testing::Direction;
pub use ccs_proto::testing::net::{Dial, Net, Step, acked_ids, downs, outcomes, ups};

pub const SENDER: &str = "123456789012";
pub const KEY: &str = "sim-key";

/// The simulated clock's start (the only clock read in these tests).
#[allow(clippy::disallowed_methods)]
pub fn epoch() -> Instant {
    Instant::now()
}

pub fn client_config() -> ClientConfig {
    ClientConfig::new(ConnectionConfig::new(
        SenderId::new(SENDER).unwrap(),
        ServerKey::new(KEY).unwrap(),
    ))
}

pub fn server_config() -> ServerConfig {
    ServerConfig::new(SenderId::new(SENDER).unwrap(), ServerKey::new(KEY).unwrap())
}

/// A network for `config` against [`server_config`], not started.
pub fn new_net(config: ClientConfig) -> Net {
    Net::new(config, server_config(), epoch())
}

/// A network for `config` against [`server_config`], all its connections up.
pub fn net_up(config: ClientConfig) -> Net {
    Net::up(config, server_config(), epoch())
}

pub fn msg(id: &str) -> Downstream {
    Downstream::builder("device-token", id).unwrap().build()
}

pub fn mid(id: &str) -> MessageId {
    MessageId::new(id).unwrap()
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
