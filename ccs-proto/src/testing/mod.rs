//! In-memory test harnesses (feature `testing`): the crate's client roles wired to its real
//! server role ([`ServerConnection`](crate::server::ServerConnection)) over simulated links,
//! with simulated time, latency, transfers cut into random pieces and injected faults.
//!
//! - [`Pair`]: one client [`Connection`](crate::Connection) and one server connection.
//! - [`net::Net`]: a [`Client`](crate::Client) and one server connection per connection it
//!   opens, with dial outcomes, kills, mutes and raw server bytes; for driving the client, or
//!   your own app-server logic on the server side, in memory.
//!
//! Time only moves when the harness moves it, from an epoch the caller gives: `drive`
//! delivers everything in flight (jumping over latency) and fires timers that are due;
//! `advance` moves the clock forward, firing timers and delivering bytes in order on the way.
//! Neither reads the clock, and no test sleeps.
//!
//! ```
//! # use std::time::{Duration, Instant};
//! use ccs_proto::testing::{Pair, ServerPolicy};
//! use ccs_proto::message::Downstream;
//! use ccs_proto::ConnectionEvent;
//!
//! let mut pair = Pair::new(Pair::client_config(), Pair::server_config(), Instant::now());
//! pair.server_policy = ServerPolicy::AutoAck;
//! pair.connect();
//! let now = pair.now;
//! pair.client.send(now, Downstream::builder("token", "m-1").unwrap().build()).unwrap();
//! pair.drive();
//! assert!(pair.client_events.iter().any(|e| matches!(e, ConnectionEvent::Acked { .. })));
//! ```

pub mod net;
mod pair;

pub use crate::rng::SplitMix64;
pub use pair::{Pair, ServerPolicy};

/// Which way bytes travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to server.
    ToServer = 0,
    /// Server to client.
    ToClient = 1,
}

/// How much of a transfer of `len` bytes gets through a link that lets `budget` more bytes
/// pass (`None`: unlimited), and whether the link dies with it. The budget is spent.
pub fn spend(budget: &mut Option<usize>, len: usize) -> (usize, bool) {
    match budget {
        Some(left) if *left < len => {
            let n = *left;
            *left = 0;
            (n, true)
        }
        Some(left) => {
            *left -= len;
            (len, false)
        }
        None => (len, false),
    }
}
