//! [`Pair`]: one client [`Connection`] and one [`ServerConnection`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::connection::config::ConnectionConfig;
use crate::connection::{ConnId, Connection, ConnectionEvent, State};
use crate::credentials::{SenderId, ServerKey};
use crate::rng::SplitMix64;
use crate::server::{ServerConfig, ServerConnection, ServerEvent};

use super::{Direction, spend};

/// How the server side answers downstream messages on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ServerPolicy {
    /// The test answers each message itself.
    #[default]
    Manual,
    /// Each downstream message is acked as soon as it arrives.
    AutoAck,
}

/// A client and a server connection joined by an in-memory link. See the [module docs](super).
#[derive(Debug)]
pub struct Pair {
    /// The simulated clock.
    pub now: Instant,
    /// The client side.
    pub client: Connection,
    /// The server side.
    pub server: ServerConnection,
    /// One-way delay of every transfer.
    pub latency: Duration,
    /// How the server answers on its own.
    pub server_policy: ServerPolicy,
    /// Every event the client reported, in order.
    pub client_events: Vec<ConnectionEvent>,
    /// Every event the server reported, in order.
    pub server_events: Vec<ServerEvent>,
    chunker: Option<Chunker>,
    to_server: VecDeque<(Instant, Vec<u8>)>,
    to_client: VecDeque<(Instant, Vec<u8>)>,
    /// Bytes still allowed through in each direction before the link dies.
    budget: [Option<usize>; 2],
    muted: [bool; 2],
    link_up: bool,
    scratch: Vec<u8>,
}

impl Pair {
    /// A client config for sender `123456789012` with key `test-key`.
    pub fn client_config() -> ConnectionConfig {
        ConnectionConfig::new(Self::sender_id(), Self::server_key())
    }

    /// A server config accepting [`Pair::client_config`]'s credentials.
    pub fn server_config() -> ServerConfig {
        ServerConfig::new(Self::sender_id(), Self::server_key())
    }

    fn sender_id() -> SenderId {
        SenderId::new("123456789012").expect("a valid literal sender id")
    }

    fn server_key() -> ServerKey {
        ServerKey::new("test-key").expect("a valid literal key")
    }

    /// Joins a new client and server connection; `epoch` is the simulated clock's start.
    ///
    /// # Panics
    ///
    /// If `client` does not validate (a test bug).
    pub fn new(client: ConnectionConfig, server: ServerConfig, epoch: Instant) -> Self {
        Self {
            now: epoch,
            client: Connection::new(ConnId(1), client, epoch).expect("a valid client config"),
            server: ServerConnection::new(server, epoch),
            latency: Duration::ZERO,
            server_policy: ServerPolicy::Manual,
            client_events: Vec::new(),
            server_events: Vec::new(),
            chunker: None,
            to_server: VecDeque::new(),
            to_client: VecDeque::new(),
            budget: [None, None],
            muted: [false, false],
            link_up: true,
            scratch: Vec::new(),
        }
    }

    /// Cuts every transfer into pieces of 1..=`max_piece` bytes chosen by `seed`.
    pub fn with_chunking(mut self, seed: u64, max_piece: usize) -> Self {
        self.chunker = Some(Chunker {
            rng: SplitMix64(seed),
            max: max_piece.max(1),
        });
        self
    }

    /// Sets the one-way latency.
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Drives until the client is connected.
    ///
    /// # Panics
    ///
    /// If it does not connect (a test bug or a broken handshake).
    pub fn connect(&mut self) {
        self.drive();
        assert_eq!(
            self.client.state(),
            State::Connected,
            "not connected; client events: {:?}; server events: {:?}",
            self.client_events,
            self.server_events
        );
    }

    /// Delivers everything in flight (jumping the clock over latency) and fires due timers,
    /// until nothing moves.
    ///
    /// # Panics
    ///
    /// After a million steps without settling (a livelock).
    pub fn drive(&mut self) {
        assert!(self.drive_bounded(1_000_000), "the pair did not settle");
    }

    /// [`Pair::drive`] for at most `max_steps` steps; `false` if it had not settled.
    pub fn drive_bounded(&mut self, max_steps: usize) -> bool {
        self.run(None, max_steps)
    }

    /// Moves the clock forward by `by`, firing timers and delivering bytes on the way.
    pub fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        assert!(
            self.run(Some(target), 10_000_000),
            "the pair did not settle"
        );
    }

    /// Lets only `bytes` more bytes through in `dir`; then the link dies and both sides see
    /// the end of the transport.
    pub fn kill_after(&mut self, dir: Direction, bytes: usize) {
        self.budget[dir as usize] = Some(bytes);
    }

    /// Silently drops every byte sent in `dir` from now on, without ending the transport
    /// (a peer that went quiet).
    pub fn mute(&mut self, dir: Direction) {
        self.muted[dir as usize] = true;
    }

    /// The link dies now: both sides see the end of the transport; bytes in flight are lost.
    pub fn disconnect(&mut self) {
        if !self.link_up {
            return;
        }
        self.link_up = false;
        self.to_server.clear();
        self.to_client.clear();
        self.client.handle_eof(self.now);
        self.server.handle_eof(self.now);
        self.pump();
    }

    /// Events the client reported since the last call.
    pub fn take_client_events(&mut self) -> Vec<ConnectionEvent> {
        std::mem::take(&mut self.client_events)
    }

    /// Events the server reported since the last call.
    pub fn take_server_events(&mut self) -> Vec<ServerEvent> {
        std::mem::take(&mut self.server_events)
    }

    fn run(&mut self, target: Option<Instant>, max_steps: usize) -> bool {
        for _ in 0..max_steps {
            self.pump();
            let delivery = [self.to_server.front(), self.to_client.front()]
                .into_iter()
                .flatten()
                .map(|(at, _)| *at)
                .min();
            let horizon = target.unwrap_or(self.now);
            let timer = [self.client.poll_timeout(), self.server.poll_timeout()]
                .into_iter()
                .flatten()
                .filter(|t| *t <= horizon)
                .min();
            let next = [delivery, timer].into_iter().flatten().min();
            let Some(next) = next else {
                if let Some(t) = target {
                    self.now = self.now.max(t);
                }
                return true;
            };
            if let Some(t) = target
                && next > t
            {
                self.now = self.now.max(t);
                return true;
            }
            self.now = self.now.max(next);
            self.deliver_due();
            if self.client.poll_timeout().is_some_and(|t| t <= self.now) {
                self.client.handle_timeout(self.now);
            }
            if self.server.poll_timeout().is_some_and(|t| t <= self.now) {
                self.server.handle_timeout(self.now);
            }
        }
        false
    }

    /// Moves outputs to the link and events to the logs; applies the server policy.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            let mut buf = std::mem::take(&mut self.scratch);
            if self.client.transmit_into(&mut buf) {
                moved = true;
                self.queue(Direction::ToServer, &buf);
                buf.clear();
            }
            if self.server.transmit_into(&mut buf) {
                moved = true;
                self.queue(Direction::ToClient, &buf);
                buf.clear();
            }
            self.scratch = buf;
            while let Some(ev) = self.client.poll_event() {
                moved = true;
                self.client_events.push(ev);
            }
            while let Some(ev) = self.server.poll_event() {
                moved = true;
                if self.server_policy == ServerPolicy::AutoAck
                    && let ServerEvent::Downstream { message, .. } = &ev
                {
                    // The message is pending: acking it cannot be refused while bound.
                    let _ = self.server.ack(message.message_id().as_str(), None);
                }
                self.server_events.push(ev);
            }
            if !moved {
                return;
            }
        }
    }

    fn queue(&mut self, dir: Direction, bytes: &[u8]) {
        if !self.link_up || self.muted[dir as usize] {
            return;
        }
        let at = self.now + self.latency;
        let queue = match dir {
            Direction::ToServer => &mut self.to_server,
            Direction::ToClient => &mut self.to_client,
        };
        match &mut self.chunker {
            // Nothing ahead of it and no delay: hand it over now, without a copy.
            None if queue.is_empty() && self.latency.is_zero() => {
                self.pass(dir, bytes);
            }
            None => queue.push_back((at, bytes.to_vec())),
            Some(c) => {
                let mut rest = bytes;
                while !rest.is_empty() {
                    let n = c.piece().min(rest.len());
                    queue.push_back((at, rest[..n].to_vec()));
                    rest = &rest[n..];
                }
            }
        }
    }

    fn deliver_due(&mut self) {
        while let Some((at, _)) = self.to_server.front()
            && *at <= self.now
        {
            let (_, bytes) = self.to_server.pop_front().expect("front exists");
            if !self.pass(Direction::ToServer, &bytes) {
                return;
            }
        }
        while let Some((at, _)) = self.to_client.front()
            && *at <= self.now
        {
            let (_, bytes) = self.to_client.pop_front().expect("front exists");
            if !self.pass(Direction::ToClient, &bytes) {
                return;
            }
        }
    }

    /// Hands bytes to their receiver, honouring the kill budget. `false` if the link died.
    fn pass(&mut self, dir: Direction, bytes: &[u8]) -> bool {
        let (allowed, dies) = spend(&mut self.budget[dir as usize], bytes.len());
        let now = self.now;
        match dir {
            Direction::ToServer => self.server.handle_input(now, &bytes[..allowed]),
            Direction::ToClient => self.client.handle_input(now, &bytes[..allowed]),
        }
        if dies {
            self.disconnect();
            return false;
        }
        true
    }
}

#[derive(Debug)]
struct Chunker {
    rng: SplitMix64,
    max: usize,
}

impl Chunker {
    fn piece(&mut self) -> usize {
        1 + (self.rng.next() % self.max as u64) as usize
    }
}
