//! A [`Client`] against the crate's real server role: one [`ServerConnection`] per connection
//! the client opens, joined by in-memory links with simulated time, latency (with optional
//! jitter, order kept per direction), random chunking and injected faults: dial outcomes
//! ([`Dial`]), links killed at once or after a number of bytes, muted directions, a stanza
//! trickled and never finished, raw bytes written to the client.
//!
//! The servers are reachable as [`Net::servers`]: answer what they receive (`ack`, `nack`,
//! `send_upstream`, ...) from your own app-server logic, or set [`Net::auto_ack`]. Whatever
//! the client and the servers report lands in [`Net::client_events`] and
//! [`Net::server_events`].
//!
//! Time only moves when the harness moves it, from the epoch given to [`Net::new`]:
//! [`Net::step`] jumps to the next scheduled thing (a delivery, a dial result, a timer, an
//! action scheduled with [`Net::schedule_custom`]); [`Net::drive`] settles without moving to
//! later timers; [`Net::advance`] moves the clock by a given time. It never reads the clock.
//!
//! ```
//! # use std::time::Instant;
//! use ccs_proto::client::ClientConfig;
//! use ccs_proto::credentials::{SenderId, ServerKey};
//! use ccs_proto::message::Downstream;
//! use ccs_proto::server::ServerConfig;
//! use ccs_proto::testing::net::{Net, acked_ids};
//! use ccs_proto::ConnectionConfig;
//!
//! let (sender, key) = (SenderId::new("123456789012")?, ServerKey::new("key")?);
//! let client = ClientConfig::new(ConnectionConfig::new(sender.clone(), key.clone()));
//! let mut net = Net::up(client, ServerConfig::new(sender, key), Instant::now());
//! net.send(Downstream::builder("device-token", "m-1")?.build());
//! net.drive();
//! // The server holds the message until the application answers it.
//! let conn = net.only_conn();
//! assert_eq!(net.pending(conn), ["m-1"]);
//! net.ack_all();
//! net.drive();
//! assert_eq!(acked_ids(&net.client_events), ["m-1"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::client::{Client, ClientConfig, ClientEvent, DownReason, MessageTicket, Outcome, Phase};
use crate::connection::ConnId;
use crate::message::Downstream;
use crate::rng::SplitMix64;
use crate::server::{ServerConfig, ServerConnection, ServerEvent, ServerState};
use crate::timer::TimerQueue;

use super::Direction;

mod engine;

use engine::{Ev, Link, Trickle};

/// What happens when the client asks to connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dial {
    /// The transport comes up; the server accepts the credentials.
    Accept,
    /// The transport comes up; the server refuses the credentials.
    BadKey,
    /// The transport cannot be opened.
    Refuse,
    /// No answer ever (the client's connect timeout must fire).
    Silent,
}

/// What one [`Net::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing is scheduled and no timer is set.
    Idle,
    /// Something happened.
    Moved,
    /// An action scheduled with [`Net::schedule_custom`] came due: the caller runs it.
    Custom(u64),
}

/// A client and the server connections it opened, joined by in-memory links. See the
/// [module docs](self).
#[derive(Debug)]
pub struct Net {
    /// The simulated clock.
    pub now: Instant,
    /// Where the simulated clock started.
    pub epoch: Instant,
    /// The client.
    pub client: Client,
    /// The server connection of each client connection whose dial was answered and that is
    /// not closed yet.
    pub servers: BTreeMap<ConnId, ServerConnection>,
    links: BTreeMap<ConnId, Link>,
    sched: TimerQueue<Ev>,
    /// One-way delay of every transfer and of dial results.
    pub latency: Duration,
    /// Extra random delay per transfer, up to this (order is kept per direction).
    pub latency_jitter: Duration,
    /// Cut every transfer into pieces of 1..=max bytes.
    pub max_piece: Option<usize>,
    /// Draws the jitter and the pieces.
    pub rng: SplitMix64,
    /// The config of each new server connection (its `seed` set to the connection id).
    pub server_config: ServerConfig,
    /// How the next dials end, one per
    /// [`Output::Connect`](crate::client::Output::Connect); then `dial_default`.
    pub dial_plan: VecDeque<Dial>,
    /// How a dial ends once `dial_plan` is empty.
    pub dial_default: Dial,
    /// Servers ack every downstream message as it arrives.
    pub auto_ack: bool,
    /// Record server events in `server_events` (the simulation and most tests do).
    pub keep_server_events: bool,
    /// Every event the client reported, in order.
    pub client_events: Vec<ClientEvent>,
    /// Every event the servers reported, in order, with their connection.
    pub server_events: Vec<(ConnId, ServerEvent)>,
    /// Every [`Output::Connect`](crate::client::Output::Connect), in order.
    pub connects: Vec<ConnId>,
    /// Every [`Output::Disconnect`](crate::client::Output::Disconnect), in order.
    pub disconnects: Vec<ConnId>,
    disconnected: BTreeSet<ConnId>,
    /// Connections the client reported draining.
    pub draining: BTreeSet<ConnId>,
    /// Broken rules seen by the harness itself: a message sent on a connection the client
    /// reported draining, a second `Disconnect`, a client timer still due after
    /// `handle_timeout`.
    pub violations: Vec<String>,
    /// How many times the client's timer fired.
    pub client_timeouts: u64,
    /// When the first byte of each trickled stanza reached the client.
    pub trickle_started: BTreeMap<ConnId, Instant>,
    /// Pings the client sent on connections it reported draining.
    pub pings_while_draining: u64,
}

impl Net {
    /// A client made from `client` whose connections reach servers made from `server`;
    /// `epoch` is the simulated clock's start. Latency 5 ms, every dial accepted, servers
    /// answer nothing on their own, draws seeded with 1 (see [`Net::with_seed`]).
    ///
    /// Nothing has moved yet: set `dial_plan` and the rest first; the first step pumps.
    ///
    /// # Panics
    ///
    /// If `client` does not validate (a test bug).
    pub fn new(client: ClientConfig, server: ServerConfig, epoch: Instant) -> Self {
        let now = epoch;
        let client = Client::new(client, now).expect("valid client config");
        Self {
            now,
            epoch: now,
            client,
            servers: BTreeMap::new(),
            links: BTreeMap::new(),
            sched: TimerQueue::new(),
            latency: Duration::from_millis(5),
            latency_jitter: Duration::ZERO,
            max_piece: None,
            rng: SplitMix64(1),
            server_config: server,
            dial_plan: VecDeque::new(),
            dial_default: Dial::Accept,
            auto_ack: false,
            keep_server_events: true,
            client_events: Vec::new(),
            server_events: Vec::new(),
            connects: Vec::new(),
            disconnects: Vec::new(),
            disconnected: BTreeSet::new(),
            draining: BTreeSet::new(),
            violations: Vec::new(),
            client_timeouts: 0,
            trickle_started: BTreeMap::new(),
            pings_while_draining: 0,
        }
    }

    /// Seeds the draws of jitter and pieces with `seed`.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng = SplitMix64(seed);
        self
    }

    /// A network whose client is up on all its connections (asserted).
    ///
    /// # Panics
    ///
    /// If not all of them come up.
    pub fn up(client: ClientConfig, server: ServerConfig, epoch: Instant) -> Self {
        let n = client.connections;
        let mut net = Self::new(client, server, epoch);
        net.drive();
        let up = ups(&net.client_events).len();
        assert_eq!(
            up, n,
            "not all connections came up: {:?}",
            net.client_events
        );
        net
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.epoch
    }

    /// The server connection of `id`.
    ///
    /// # Panics
    ///
    /// If there is none (never dialled, refused, or closed).
    pub fn server(&mut self, id: ConnId) -> &mut ServerConnection {
        self.servers
            .get_mut(&id)
            .expect("no such server connection")
    }

    /// The server connections that are bound (or draining): where messages flow.
    pub fn bound(&self) -> Vec<ConnId> {
        self.servers
            .iter()
            .filter(|(id, s)| {
                matches!(s.state(), ServerState::Bound | ServerState::Draining)
                    && self
                        .links
                        .get(id)
                        .is_some_and(|l| l.alive && !l.client_done)
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// The connections whose link is up and neither side has closed.
    pub fn alive_links(&self) -> Vec<ConnId> {
        self.links
            .iter()
            .filter(|(_, l)| l.alive && !l.client_done && !l.server_done)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Events the client reported since the last call.
    pub fn take_events(&mut self) -> Vec<ClientEvent> {
        std::mem::take(&mut self.client_events)
    }

    /// Events the servers reported since the last call.
    pub fn take_server_events(&mut self) -> Vec<(ConnId, ServerEvent)> {
        std::mem::take(&mut self.server_events)
    }

    /// Hands `m` to the client now and carries out what follows at once.
    ///
    /// # Panics
    ///
    /// If the client refuses it (a full queue, a duplicate id, closing).
    pub fn send(&mut self, m: Downstream) -> MessageTicket {
        let now = self.now;
        let t = self.client.send(now, m).expect("send accepted");
        self.pump();
        t
    }

    /// Schedules an action of the caller's, `token`, after `after`: the step that reaches it
    /// returns [`Step::Custom`] (and `drive` and `advance` return it).
    pub fn schedule_custom(&mut self, after: Duration, token: u64) {
        let at = self.now + after;
        self.push(at, Ev::Custom(token));
    }

    /// The link dies now: both sides see the end of the transport; bytes in flight are lost.
    pub fn kill(&mut self, id: ConnId) {
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        if !link.alive {
            return;
        }
        link.alive = false;
        let now = self.now;
        self.client.handle_eof(now, id);
        if let Some(s) = self.servers.get_mut(&id) {
            s.handle_eof(now);
        }
        self.pump();
    }

    /// Lets only `bytes` more bytes through in `dir`, then the link dies.
    pub fn kill_after(&mut self, id: ConnId, dir: Direction, bytes: usize) {
        if let Some(l) = self.links.get_mut(&id) {
            l.budget[dir as usize] = Some(bytes);
        }
    }

    /// Drops every byte in `dir` from now on without ending the transport.
    pub fn mute(&mut self, id: ConnId, dir: Direction) {
        if let Some(l) = self.links.get_mut(&id) {
            l.muted[dir as usize] = true;
        }
    }

    /// The server starts a stanza on `id` and never finishes it: its own output on the link is
    /// dropped from now on (as [`Net::mute`] does, so the stream the client reads stays
    /// well-formed: everything the server wrote before arrives whole, then the stanza), and
    /// the stanza's bytes follow, `first` at once and then one every `every`, never closing
    /// it. It stops when the link ends.
    pub fn trickle(&mut self, id: ConnId, head: Vec<u8>, first: usize, every: Duration) -> bool {
        // What the server wrote so far goes out first, whole.
        self.pump();
        let now = self.now;
        let latency = self.latency;
        let Some(link) = self.links.get_mut(&id) else {
            return false;
        };
        if !link.alive || link.client_done || link.server_done || link.trickle.is_some() {
            return false;
        }
        link.muted[Direction::ToClient as usize] = true;
        link.trickle = Some(Trickle {
            first: first.clamp(1, head.len().max(1)),
            head,
            sent: 0,
            every,
        });
        let at = (now + latency).max(link.last[Direction::ToClient as usize]);
        self.push(at, Ev::Trickle(id));
        true
    }

    /// Writes a whole stanza from the server to the client on `id`, after everything the
    /// server wrote so far (the bytes of a message the server role cannot produce). `false`
    /// if the server cannot send messages now (not bound, closing, link gone). Dropped like
    /// the server's own output on a muted link.
    pub fn inject_to_client(&mut self, id: ConnId, bytes: Vec<u8>) -> bool {
        self.pump();
        let ready = self
            .servers
            .get(&id)
            .is_some_and(|s| matches!(s.state(), ServerState::Bound | ServerState::Draining));
        let up = self
            .links
            .get(&id)
            .is_some_and(|l| l.alive && !l.client_done && !l.server_done);
        if !ready || !up {
            return false;
        }
        self.transfer(id, Direction::ToClient, bytes);
        true
    }

    /// Removes every armed kill budget: no link dies any more. Muted links stay muted (a
    /// stream cannot lose bytes in the middle and go on); the client's ping ends them.
    pub fn heal(&mut self) {
        for l in self.links.values_mut() {
            l.budget = [None, None];
        }
    }

    /// The next time anything happens.
    pub fn next_time(&self) -> Option<Instant> {
        let servers = self
            .servers
            .values()
            .filter_map(ServerConnection::poll_timeout)
            .min();
        [self.sched.next_at(), self.client.poll_timeout(), servers]
            .into_iter()
            .flatten()
            .min()
    }

    /// Moves to the next thing that happens and does it.
    pub fn step(&mut self) -> Step {
        self.pump();
        let Some(t) = self.next_time() else {
            return Step::Idle;
        };
        self.now = self.now.max(t);
        self.do_due()
    }

    /// Delivers everything in flight (jumping the clock over latency) and fires timers that
    /// are due, without moving to later timers. Returns the scripted actions that came due.
    pub fn drive(&mut self) -> Vec<u64> {
        let mut custom = Vec::new();
        for _ in 0..1_000_000 {
            self.pump();
            let timer_due = self.client.poll_timeout().is_some_and(|t| t <= self.now)
                || self
                    .servers
                    .values()
                    .any(|s| s.poll_timeout().is_some_and(|t| t <= self.now));
            if let Some(at) = self.sched.next_at() {
                self.now = self.now.max(at);
            } else if !timer_due {
                return custom;
            }
            if let Step::Custom(c) = self.do_due() {
                custom.push(c);
            }
        }
        panic!("the network did not settle");
    }

    /// Moves the clock forward by `by`, doing everything due on the way.
    pub fn advance(&mut self, by: Duration) -> Vec<u64> {
        let target = self.now + by;
        let mut custom = Vec::new();
        loop {
            self.pump();
            match self.next_time() {
                Some(t) if t <= target => {
                    self.now = self.now.max(t);
                    if let Step::Custom(c) = self.do_due() {
                        custom.push(c);
                    }
                }
                _ => {
                    self.now = self.now.max(target);
                    return custom;
                }
            }
        }
    }

    /// Steps until `done` holds (checked after every step), at most `max` steps.
    pub fn run_until(&mut self, max: usize, mut done: impl FnMut(&mut Self) -> bool) -> bool {
        for _ in 0..max {
            if done(self) {
                return true;
            }
            if self.step() == Step::Idle {
                return done(self);
            }
        }
        false
    }

    /// The ids pending (received, unanswered) on a server connection, in arrival order.
    pub fn pending(&self, id: ConnId) -> Vec<String> {
        self.servers
            .get(&id)
            .map(|s| {
                s.pending_ids()
                    .into_iter()
                    .map(|m| m.as_str().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Acks every pending message on every server connection.
    pub fn ack_all(&mut self) {
        let ids: Vec<ConnId> = self.servers.keys().copied().collect();
        for c in ids {
            for m in self.pending(c) {
                let _ = self.server(c).ack(&m, None);
            }
        }
        self.pump();
    }

    /// The one live (up, not draining) connection's id.
    ///
    /// # Panics
    ///
    /// If there is not exactly one.
    pub fn only_conn(&self) -> ConnId {
        let up: Vec<ConnId> = self
            .client
            .connections()
            .filter(|c| c.phase == Phase::Up)
            .map(|c| c.id)
            .collect();
        assert_eq!(up.len(), 1, "{up:?}");
        up[0]
    }
}

/// The outcomes among `events`: (ticket, message id, outcome).
pub fn outcomes(events: &[ClientEvent]) -> Vec<(u64, String, Outcome)> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Outcome {
                ticket,
                message,
                outcome,
            } => Some((
                ticket.get(),
                message.message_id().as_str().to_owned(),
                outcome.clone(),
            )),
            _ => None,
        })
        .collect()
}

/// The ids of the acked messages among `events`, in order.
pub fn acked_ids(events: &[ClientEvent]) -> Vec<String> {
    outcomes(events)
        .into_iter()
        .filter(|(_, _, o)| o.is_acked())
        .map(|(_, id, _)| id)
        .collect()
}

/// The downstream message ids the servers received, in order, with their connection.
pub fn received(events: &[(ConnId, ServerEvent)]) -> Vec<(ConnId, String)> {
    events
        .iter()
        .filter_map(|(c, e)| match e {
            ServerEvent::Downstream { message, .. } => {
                Some((*c, message.message_id().as_str().to_owned()))
            }
            _ => None,
        })
        .collect()
}

/// The ids of the connections the client reported up, in order.
pub fn ups(events: &[ClientEvent]) -> Vec<ConnId> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::ConnectionUp { id, .. } => Some(*id),
            _ => None,
        })
        .collect()
}

/// The `ConnectionDown` events: (id, reason, will_retry_in).
pub fn downs(events: &[ClientEvent]) -> Vec<(ConnId, DownReason, Option<Duration>)> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::ConnectionDown {
                id,
                reason,
                will_retry_in,
            } => Some((*id, reason.clone(), *will_retry_in)),
            _ => None,
        })
        .collect()
}
